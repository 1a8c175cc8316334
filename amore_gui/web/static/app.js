/* AMORE in the browser: the run table page (vanilla JS; AG Grid Community, Plotly.js).
 *
 * The server sends cell texts already formatted (the GUI's code); this page only arranges
 * them. Every value is put into the page as text (textContent, AG Grid's text rendering,
 * SVG points), never as HTML. See amore_gui/web/data.py for the row format.
 */
"use strict";

const SLUG = decodeURIComponent(location.pathname.split("/")[2] || "");
const API = `/api/d/${encodeURIComponent(SLUG)}`;
const K = {NUMBER: 1, BOOL: 2, STRING: 3, COMPLEX: 4, THUMBNAIL: 5, SPARKLINE: 6, ARRAY: 7,
           ERROR: 8, SKIPPED: 9, NONE: 10};
const STATIC_KEYS = ["#status", "#proposal", "#run", "#start", "#added", "#comment"];

const state = {
  grid: null, columns: [], editor: false, user: "", epoch: null, seq: 0,
  filterIds: null, filterText: "", ws: null, wsDelay: 500, loading: false, rowsById: new Map(),
  saveTimer: null, refilterTimer: null, plotTimer: null, plot: null, jobs: {}, tall: false,
  proposals: new Set(), pendingJump: null, status: null, generation: 0,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

/* -- talking to the server ------------------------------------------------------------------ */

async function getJSON(url) {
  const r = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
  const body = await r.json().catch(() => ({error: `${r.status} ${r.statusText}`}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

async function send(method, url, data) {
  const r = await fetch(url, {method, credentials: "same-origin", body: JSON.stringify(data),
    headers: {"Content-Type": "application/json", "X-AMORE-Request": "1",
              "Accept": "application/json"}});
  const body = await r.json().catch(() => ({error: `${r.status} ${r.statusText}`}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

function message(text, isError) {
  $("message-text").textContent = text;
  $("banner-message").className = "banner" + (isError ? " error-msg" : "");
  $("banner-message").hidden = false;
  clearTimeout(message.timer);
  if (!isError) message.timer = setTimeout(() => { $("banner-message").hidden = true; }, 6000);
}

/* -- cells ------------------------------------------------------------------------------------ */

function cellKind(c) {
  if (c === null || c === undefined) return 0;
  if (typeof c === "string" || Array.isArray(c)) return K.NUMBER;
  return c.k;
}
function cellText(c) {
  if (c === null || c === undefined) return "";
  if (typeof c === "string") return c;
  if (Array.isArray(c)) return c[0];
  return c.t || "";
}
function cellNumber(c) {
  if (typeof c === "string") { const x = parseFloat(c); return isNaN(x) ? null : x; }
  if (Array.isArray(c)) return c[1];
  if (c && typeof c.n === "number") return c.n;
  return null;
}
function cellTip(c) { return c && typeof c === "object" && !Array.isArray(c) ? (c.h || null) : null; }

/* Sort like the GUI (TableData.sort_keys): numbers, then texts (case-insensitive), then empty
   cells and errors, which stay last in both directions. */
function sortGroup(c) {
  const k = cellKind(c);
  if ((k === K.NUMBER || k === K.BOOL) && cellNumber(c) !== null) return 0;
  if (k === K.STRING || k === K.COMPLEX || k === K.ARRAY) return 1;
  return 2;
}
function compareCells(a, b, na, nb, desc) {
  const ga = sortGroup(a), gb = sortGroup(b);
  if (ga !== gb) return desc ? gb - ga : ga - gb;
  if (ga === 0) return cellNumber(a) - cellNumber(b);
  if (ga === 1) return cellText(a).toLowerCase().localeCompare(cellText(b).toLowerCase());
  return 0;
}
function compareNullable(a, b, na, nb, desc) {
  const ea = a === null || a === undefined || a === "", eb = b === null || b === undefined || b === "";
  if (ea !== eb) return (ea ? 1 : -1) * (desc ? -1 : 1);
  if (ea) return 0;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).toLowerCase().localeCompare(String(b).toLowerCase());
}

class SparkRenderer {
  init(p) {
    this.eGui = document.createElement("div");
    this.eGui.style.height = "100%";
    this.draw(p);
  }
  getGui() { return this.eGui; }
  refresh(p) { this.eGui.replaceChildren(); this.draw(p); return true; }
  draw(p) {
    const c = p.value;
    const k = cellKind(c);
    if (k === K.THUMBNAIL) {
      const img = el("img", {class: "thumb", loading: "lazy", alt: "",
        src: `${API}/thumb?id=${encodeURIComponent(p.data.id)}&name=${encodeURIComponent(p.colDef.field)}&v=${p.data.v}`});
      this.eGui.append(img);
      return;
    }
    if (k === K.SPARKLINE && Array.isArray(c.s)) {
      const pts = c.s;
      const fin = pts.filter((v) => v !== null);
      if (fin.length < 2) return;
      const lo = Math.min(...fin), hi = Math.max(...fin), span = (hi - lo) || 1, n = pts.length;
      const svgNS = "http://www.w3.org/2000/svg";
      const svg = document.createElementNS(svgNS, "svg");
      svg.setAttribute("class", "spark");
      svg.setAttribute("viewBox", "0 0 100 30");
      svg.setAttribute("preserveAspectRatio", "none");
      const line = document.createElementNS(svgNS, "polyline");
      const xy = pts.map((v, i) => `${(i / (n - 1) * 100).toFixed(2)},${(28 - ((v === null ? lo : v) - lo) / span * 26).toFixed(2)}`);
      line.setAttribute("points", xy.join(" "));
      svg.append(line);
      this.eGui.append(svg);
      return;
    }
    this.eGui.textContent = cellText(c);
  }
}

/* -- columns ------------------------------------------------------------------------------------ */

function isManual(col) { return !!col.manual; }

function variableColDef(col, i) {
  const def = {
    colId: col.key, field: col.key, headerName: col.header,
    headerTooltip: [col.title + (col.units ? ` [${col.units}]` : ""), col.description, col.key]
      .filter(Boolean).join("\n"),
    valueGetter: (p) => p.data ? p.data.x[i] : null,
    valueFormatter: (p) => cellText(p.value),
    comparator: compareCells,
    tooltipValueGetter: (p) => cellTip(p.value),
    cellClass: (p) => {
      const c = p.value, k = cellKind(c), out = [];
      if (k === K.NUMBER) out.push("k-num");
      else if (k === K.BOOL) out.push("k-bool");
      else if (k === K.ERROR) out.push("k-err");
      else if (k === K.SKIPPED) out.push("k-skip");
      if (c && typeof c === "object" && !Array.isArray(c)) {
        if (c.b) out.push("b");
        if (c.i) out.push("i");
        if (c.z) out.push("stale");
      }
      out.push(isManual(col) ? "manual" : "inspectable");
      return out;
    },
    cellStyle: (p) => {
      const c = p.value;
      return c && typeof c === "object" && !Array.isArray(c) && c.bg ? {backgroundColor: c.bg} : null;
    },
    // plain text cells need no renderer (AG Grid's fast path); new kinds arrive with a reload
    cellRendererSelector: col.drawn ? (p) => {
      const k = cellKind(p.value);
      return k === K.SPARKLINE || k === K.THUMBNAIL ? {component: SparkRenderer} : undefined;
    } : undefined,
    width: headerWidth(col.header), enableCellChangeFlash: true,
  };
  return def;
}

/* A column's first width: its header's longest line (the user's own widths are remembered). */
function headerWidth(header) {
  const longest = Math.max(...String(header).split("\n").map((l) => l.length));
  return Math.max(80, Math.min(240, Math.round(longest * 7.2 + 44)));
}

function staticColDef(col) {
  const key = col.key;
  const base = {colId: key, headerName: col.title, headerTooltip: col.description || col.title,
                width: 90, comparator: compareNullable};
  if (key === "#status") return {...base, width: 110, valueGetter: (p) => p.data ? p.data.s : "",
    tooltipValueGetter: (p) => p.data && p.data.sh,
    cellClass: (p) => p.data ? ["st-" + p.data.sc] : [], pinned: "left",
    comparator: (a, b, na, nb) => compareNullable(na.data.sc + a, nb.data.sc + b)};
  if (key === "#proposal") return {...base, field: "p", valueGetter: (p) => p.data && p.data.p};
  if (key === "#run") return {...base, field: "r", width: 92, pinned: "left", cellClass: "k-num",
    valueGetter: (p) => p.data && p.data.r};
  if (key === "#start" || key === "#added") {
    const t = key === "#start" ? "t0" : "t1", T = key === "#start" ? "T0" : "T1";
    return {...base, width: 165, valueGetter: (p) => p.data ? p.data[T] : null,
      valueFormatter: (p) => p.data ? p.data[t] : ""};
  }
  if (key === "#comment") return {...base, field: "c", width: 220, editable: () => state.editor,
    valueGetter: (p) => p.data ? p.data.c : null,
    valueSetter: (p) => { p.data.c = p.newValue || null; return true; },
    tooltipValueGetter: (p) => p.data && p.data.c && p.data.c.length > 30 ? p.data.c : null,
    cellEditor: "agTextCellEditor"};
  return base;
}

function buildColumnDefs(columns, layout, rows) {
  const defs = new Map();
  columns.forEach((col, idx) => {
    const i = idx - STATIC_KEYS.length;
    const d = col.variable ? variableColDef(col, i) : staticColDef(col);
    if (col.variable && rows && rows.length) {      // text columns as wide as their texts
      let longest = 0;
      for (const r of rows) longest = Math.max(longest, cellText(r.x[i]).length);
      d.width = Math.max(d.width, Math.min(260, Math.round(longest * 7.2 + 28)));
    }
    defs.set(col.key, d);
  });
  const hidden = new Set(layout.hidden || []);
  const widths = layout.widths || {};
  const [sortKey, desc] = layout.sort || ["#run", true];
  const out = [];
  for (const key of layout.order || columns.map((c) => c.key)) {
    const d = defs.get(key);
    if (!d) continue;
    d.hide = hidden.has(key);
    if (widths[key]) d.width = widths[key];
    if (key === sortKey) d.sort = desc ? "desc" : "asc";
    out.push(d);
    defs.delete(key);
  }
  for (const d of defs.values()) out.push(d);
  return out;
}

/* -- the grid ----------------------------------------------------------------------------------- */

function gridOptions(columns, layout, rows) {
  return {
    columnDefs: buildColumnDefs(columns, layout, rows),
    rowData: [],
    getRowId: (p) => p.data.id,
    rowHeight: state.tall ? 64 : 28,
    headerHeight: 46,
    defaultColDef: {sortable: true, resizable: true, suppressHeaderMenuButton: true,
                    suppressMovable: false},
    valueCache: true,
    suppressColumnMoveAnimation: true,
    rowSelection: {mode: "multiRow", checkboxes: false, headerCheckbox: false,
                   enableClickSelection: true},
    enableBrowserTooltips: true,
    animateRows: false,
    asyncTransactionWaitMillis: 30,
    suppressColumnVirtualisation: false,
    // rows kept beyond the visible ones: each costs style, layout, paint and hit-testing in
    // every frame, and a wheel notch (100 px) brings in fewer than four (benchmarks/web_table.py)
    rowBuffer: 3,
    isExternalFilterPresent: () => state.filterIds !== null,
    doesExternalFilterPass: (node) => state.filterIds === null || state.filterIds.has(node.data.id),
    onCellValueChanged: onCellValueChanged,
    onCellDoubleClicked: onCellDoubleClicked,
    onColumnMoved: (e) => { if (e.finished) saveLayoutSoon(); },
    onColumnVisible: saveLayoutSoon,
    onColumnResized: (e) => { if (e.finished && e.source === "uiColumnResized") saveLayoutSoon(e.columns); },
    onSortChanged: saveLayoutSoon,
    onModelUpdated: updateCounts,
    // a selection the person changes while the table is read again is theirs: the runs
    // selected before the reload are not selected again when their rows come back
    onSelectionChanged: (e) => { if (USER_SELECTION.test(e.source || "")) state.keepSelected = null; },
    // the first rows are on screen once the frame after the one that drew them begins
    onFirstDataRendered: () => requestAnimationFrame(() => requestAnimationFrame(() => {
      document.body.dataset.painted = String(performance.now());
    })),
  };
}

const resized = new Set();
function saveLayoutSoon(cols) {
  if (Array.isArray(cols)) cols.forEach((c) => resized.add(c.getColId()));
  clearTimeout(state.saveTimer);
  state.saveTimer = setTimeout(saveLayout, 800);
}
async function saveLayout() {
  if (!state.grid) return;
  const cs = state.grid.getColumnState();
  const sorted = cs.find((c) => c.sort);
  const widths = {};
  for (const c of cs) if (resized.has(c.colId)) widths[c.colId] = Math.round(c.width);
  try {
    await send("PUT", `${API}/layout`, {order: cs.map((c) => c.colId),
      hidden: cs.filter((c) => c.hide).map((c) => c.colId), widths,
      sort: sorted ? [sorted.colId, sorted.sort === "desc"] : ["#run", true]});
  } catch (e) { console.warn("layout not saved", e); }
}

function createGrid(first) {
  // the runs selected before a reload stay selected once their rows are back (applyRows)
  state.keepSelected = new Set([...(state.keepSelected || []), ...selectedRows().map((r) => r.id)]);
  if (state.grid) state.grid.destroy();
  $("grid").classList.toggle("tall", state.tall);
  state.columns = first.columns;
  state.grid = agGrid.createGrid($("grid"), gridOptions(first.columns, first.layout, first.rows));
}

/* -- rows: the first page, the rest, live updates ------------------------------------------------ */

function applyRows(rows, fromPage) {
  const add = [], update = [];
  for (const r of rows) {
    const old = state.rowsById.get(r.id);
    if (old) {
      if (fromPage && old.v > r.v) continue;      // a live update was newer than this page
      update.push(r);
    } else add.push(r);
    state.rowsById.set(r.id, r);
    state.proposals.add(String(r.p));
  }
  if (!state.grid || (!add.length && !update.length)) return;
  state.grid.applyTransactionAsync({add, update}, () => {
    if (!fromPage) refilterSoon();
    reselectKept();
    maybeJump();
  });
  if (!fromPage && state.plot) refreshPlotSoon();
}

/** Sources of AG Grid's selectionChanged events that are a person's doing (click, space key,
 * Ctrl+A, the header's select-all), not this page's own calls. */
const USER_SELECTION = /^(rowClicked|checkboxSelected|spaceKey|keyboardSelectAll|uiSelectAll)/;

function reselectKept() {
  if (!state.keepSelected || !state.keepSelected.size) return;
  for (const id of [...state.keepSelected]) {
    const node = state.grid.getRowNode(id);
    if (node) { node.setSelected(true); state.keepSelected.delete(id); }
  }
}

async function loadTable() {
  const gen = ++state.generation;
  state.loading = true;
  const first = await getJSON(`${API}/table`);
  if (gen !== state.generation) return;
  state.epoch = first.epoch;
  state.seq = first.seq;
  state.editor = first.editor;
  state.user = first.user;
  state.slurm = first.slurm;
  state.vocabulary = first.vocabulary;
  state.layout = first.layout;
  document.body.classList.toggle("viewer", !first.editor);
  document.title = `AMORE — ${first.title}`;
  $("title").textContent = first.title;
  $("who").textContent = `${first.user} (${first.editor ? "editor" : "viewer"})`;
  state.rowsById = new Map();
  state.proposals = new Set();
  createGrid(first);
  applyRows(first.rows, true);
  showStatus(first.status);
  connect();
  let next = first.next;
  while (next !== null && next !== undefined) {
    const page = await getJSON(`${API}/table?below=${next}`);
    if (gen !== state.generation) return;
    applyRows(page.rows, true);
    next = page.next;
  }
  state.loading = false;
  state.grid.flushAsyncTransactions();
  reselectKept();
  state.keepSelected = null;       // rows that did not come back are gone
  document.body.dataset.loaded = "1";
  if (state.filterText) applyFilter(state.filterText);
  maybeJump();
}

function reloadAll(why) {
  if (why) message(`Reloading the table (${why}).`, false);
  if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
  loadTable().catch((e) => message(`Could not load the table: ${e.message}`, true));
}

/* -- the live channel ---------------------------------------------------------------------------- */

function connect() {
  if (state.ws) { state.ws.onclose = null; state.ws.close(); }
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}${API}/live?since=${state.seq}&epoch=${state.epoch}`);
  state.ws = ws;
  ws.onopen = () => { state.wsDelay = 500; $("banner-disconnected").hidden = true;
                      document.body.dataset.live = "1"; };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "hello") { if (m.epoch !== state.epoch) { reloadAll("the server was restarted"); return; }
                              showStatus(m.status); return; }
    if (m.type === "reload") { reloadAll(m.why); return; }
    if (m.seq <= state.seq && m.type !== "status") return;     // already in the table
    state.seq = Math.max(state.seq, m.seq);
    if (m.type === "rows") applyRows(m.rows, false);
    else if (m.type === "status") showStatus(m);
    else if (m.type === "logbook") { if (!$("side").hidden && $("side").dataset.what === "logbook") openLogbook(); }
    else if (m.type === "job") showJob(m.id, m.job);
  };
  ws.onclose = () => {
    state.ws = null;
    document.body.dataset.live = "0";
    $("banner-disconnected").hidden = false;
    setTimeout(() => { if (!state.ws) connect(); }, state.wsDelay);
    state.wsDelay = Math.min(state.wsDelay * 2, 5000);
  };
}

function showStatus(s) {
  if (!s) return;
  state.status = s;
  updateCounts();
  const b = s.backend || {};
  $("backend").textContent = b.text || "";
  $("backend").title = b.detail || "";
  $("backend").classList.toggle("down", b.alive === false);
  const banner = $("banner-backend");
  if (b.alive === false) {
    banner.textContent = `${b.text || "Backend not running"}: new runs are not processed until it is started ` +
      "(amore-proto backend start, or from the GUI)." + (b.detail ? ` ${b.detail}` : "");
    banner.hidden = false;
  } else banner.hidden = true;
  const src = s.source || {};
  $("source").textContent = src.text || "";
  // the server follows the database no more: say that the table stands still
  $("banner-nolive").textContent = src.mode === "none" ?
    `${src.text}. New runs and values show after reloading the page.` : "";
  $("banner-nolive").hidden = src.mode !== "none";
}

function updateCounts() {
  if (!state.grid) return;
  const total = state.rowsById.size;
  const shown = state.grid.getDisplayedRowCount();
  const nvars = state.columns.filter((c) => c.variable).length;
  $("counts").textContent = `${total} ${state.vocabulary ? state.vocabulary.run.toLowerCase() : "run"}s` +
    (shown !== total ? `, ${shown} shown` : "") + ` · ${nvars} variables` +
    (state.status && state.status.stale ? ` · ${state.status.stale} stale value${state.status.stale === 1 ? "" : "s"}` : "") +
    (state.loading ? " · loading older runs…" : "");
}

/* -- filter, jump, link ------------------------------------------------------------------------- */

async function applyFilter(text) {
  state.filterText = text;
  const box = $("filter");
  if (!text.trim()) {
    state.filterIds = null;
    box.classList.remove("bad");
    $("filter-error").hidden = true;
    if (state.grid) state.grid.onFilterChanged();
    return;
  }
  let res;
  try { res = await getJSON(`${API}/filter?q=${encodeURIComponent(text)}`); }
  catch (e) { message(`Filter failed: ${e.message}`, true); return; }
  if (text !== state.filterText) return;           // typed on meanwhile
  if (res.error) {
    box.classList.add("bad");
    const pos = res.error.pos;
    $("filter-caret").textContent = pos === null || pos === undefined ? text :
      `${text}\n${" ".repeat(pos)}^`;
    $("filter-message").textContent = res.error.message +
      (pos === null || pos === undefined ? "" : ` (at position ${pos + 1})`);
    $("filter-error").hidden = false;
    return;                                           // the rows stay as they were
  }
  box.classList.remove("bad");
  $("filter-error").hidden = true;
  state.filterIds = new Set(res.ids);
  if (state.grid) state.grid.onFilterChanged();
}

function refilterSoon() {
  if (!state.filterText.trim()) return;
  clearTimeout(state.refilterTimer);
  state.refilterTimer = setTimeout(() => applyFilter(state.filterText), 300);
}

function findRow(spec) {
  spec = String(spec).trim();
  if (spec.includes(":")) return state.rowsById.has(spec) ? spec : null;
  const run = parseInt(spec, 10);
  if (isNaN(run)) return null;
  let best = null;
  for (const r of state.rowsById.values())
    if (r.r === run && (best === null || String(r.p) > String(best.p))) best = r;
  return best ? best.id : null;
}

function jumpTo(spec, quiet) {
  const id = findRow(spec);
  if (!id) { if (!quiet) message(`No run ${spec} in this table${state.loading ? " (yet)" : ""}.`, true); return false; }
  const node = state.grid.getRowNode(id);
  if (!node || !node.displayed) {
    if (!quiet) message(`Run ${spec} is hidden by the filter.`, true);
    return !!node;
  }
  state.grid.ensureNodeVisible(node, "middle");
  state.keepSelected = null;       // a jump selects its run alone, also during a reload
  state.grid.deselectAll();
  node.setSelected(true);
  state.grid.flashCells({rowNodes: [node]});
  document.body.dataset.jumped = id;
  return true;
}

function maybeJump() {
  if (state.pendingJump && jumpTo(state.pendingJump, state.loading)) state.pendingJump = null;
}

function runLink(row) {
  const spec = state.proposals.size > 1 ? `${row.p}:${row.r}` : `${row.r}`;
  return `${location.origin}${location.pathname}#run=${encodeURIComponent(spec)}`;
}

function selectedRows() {
  return state.grid ? state.grid.getSelectedRows() : [];
}

/* -- edits ------------------------------------------------------------------------------------ */

async function onCellValueChanged(e) {
  if (e.colDef.colId !== "#comment") return;
  try {
    await send("POST", `${API}/comment`, {id: e.data.id, text: e.newValue || ""});
  } catch (err) {
    e.data.c = e.oldValue;
    state.grid.refreshCells({rowNodes: [e.node], force: true});
    message(`The comment was not saved: ${err.message}`, true);
  }
}

function onCellDoubleClicked(e) {
  const col = state.columns.find((c) => c.key === e.colDef.colId);
  if (!col || !col.variable) return;
  if (col.manual) { if (state.editor) openSetValue(col, [e.data]); else openHistory(col, e.data); return; }
  openInspect(col, e.data);
}

function openModal(title, ...body) {
  $("modal-title").textContent = title;
  $("modal-body").replaceChildren(...body);
  $("modal").hidden = false;
}
function closeModal() {
  $("modal").hidden = true;
  if (window.Plotly) document.querySelectorAll("#modal-body .js-plotly-plot").forEach((d) => Plotly.purge(d));
  $("modal-body").replaceChildren();
  state.plot = null;
}

async function historyTable(col, row) {
  const box = el("div", {class: "history"}, el("div", {text: "Edits of this cell:"}));
  try {
    const res = await getJSON(`${API}/history?id=${encodeURIComponent(row.id)}&name=${encodeURIComponent(col.key)}`);
    const t = el("table");
    for (const h of res.history) {
      t.append(el("tr", {}, el("td", {text: new Date(h.timestamp * 1000).toLocaleString()}),
        el("td", {text: h.display + (h.carried ? " (carried over)" : "")}),
        el("td", {text: `by ${h.author} via ${h.via}`})));
    }
    if (!res.history.length) t.append(el("tr", {}, el("td", {text: "(none)"})));
    box.append(t);
  } catch (e) { box.append(el("div", {text: e.message})); }
  return box;
}

async function openHistory(col, row) {
  openModal(`Run ${row.r} · ${col.title}`, await historyTable(col, row));
}

function manualColumns() { return state.columns.filter((c) => c.manual); }

async function openSetValue(col, rows) {
  if (!rows.length) { message("Select one or more runs first.", true); return; }
  if (!col) {
    const cols = manualColumns();
    if (!cols.length) { message("This table has no manual columns ('amore-proto column add').", true); return; }
    col = cols[0];
  }
  const colSel = el("select", {id: "set-column"});
  for (const c of manualColumns()) colSel.append(el("option", {value: c.key, text: c.title, selected: c.key === col.key}));
  const valueBox = el("span");
  const err = el("div", {class: "info", id: "set-error"});
  let input;
  const makeInput = () => {
    const c = manualColumns().find((x) => x.key === colSel.value);
    const cur = rows.length === 1 ? cellText(rows[0].x[state.columns.indexOf(c) - STATIC_KEYS.length]) : "";
    if (c.manual.type === "choice") {
      input = el("select", {id: "set-value"}, el("option", {value: "", text: "(clear)"}));
      for (const ch of c.manual.choices) input.append(el("option", {value: ch, text: ch, selected: ch === cur}));
    } else if (c.manual.type === "boolean") {
      input = el("select", {id: "set-value"}, el("option", {value: "", text: "(clear)"}),
        el("option", {value: "yes", text: "✓ yes", selected: cur === "✓"}),
        el("option", {value: "no", text: "✗ no", selected: cur === "✗"}));
    } else {
      input = el("input", {id: "set-value", type: "text", value: cur,
        placeholder: c.units ? `value, e.g. 12 ${c.units}` : "value"});
    }
    valueBox.replaceChildren(input, c.units ? el("span", {text: ` (${c.units})`}) : "");
    input.focus();
  };
  colSel.addEventListener("change", makeInput);
  const hist = el("div");
  const save = el("button", {class: "primary", id: "set-save", type: "button", text: rows.length > 1 ? `Set for ${rows.length} runs` : "Set"});
  const confirm = el("button", {type: "button", text: "Confirm carried-over value",
    title: "Keep the value and drop its 'carried over' mark"});
  const doSet = async (isConfirm) => {
    err.textContent = "";
    try {
      const raw = input.value;
      await send("POST", `${API}/manual`, {ids: rows.map((r) => r.id), name: colSel.value,
        value: isConfirm ? null : (raw === "" ? null : raw), confirm: isConfirm});
      closeModal();
      message(`${colSel.value} ${isConfirm ? "confirmed" : "set"} for run(s) ${rows.map((r) => r.r).join(", ")}`, false);
    } catch (e) { err.textContent = `Not saved: ${e.message}`; err.style.color = "var(--err-fg)"; }
  };
  save.addEventListener("click", () => doSet(false));
  confirm.addEventListener("click", () => doSet(true));
  const title = rows.length === 1 ? `Run ${rows[0].r}` : `${rows.length} runs (${rows.map((r) => r.r).join(", ")})`;
  openModal(`Set a manual value · ${title}`,
    el("div", {class: "form-row"}, el("label", {text: "Column"}), colSel),
    el("div", {class: "form-row"}, el("label", {text: "Value"}), valueBox),
    el("div", {class: "form-row"}, save, confirm), err, hist);
  makeInput();
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") doSet(false); });
  if (rows.length === 1) hist.append(await historyTable(col, rows[0]));
}

/* -- inspect and plot (Plotly, loaded when first needed) ----------------------------------------- */

let plotlyLoading = null;
function loadPlotly() {
  if (window.Plotly) return Promise.resolve();
  if (!plotlyLoading) plotlyLoading = new Promise((ok, fail) => {
    const s = el("script", {src: "/static/vendor/plotly.min.js"});
    s.onload = ok; s.onerror = () => fail(new Error("plotly.min.js did not load"));
    document.head.append(s);
  });
  return plotlyLoading;
}

const PLOT_CONFIG = {displaylogo: false, responsive: true};

function drawValue(box, v) {
  const info = el("div", {class: "info", text: v.info || ""});
  if (v.kind === "line") {
    const div = el("div", {class: "plot"});
    box.append(div, info);
    Plotly.newPlot(div, [{x: v.x, y: v.y, type: "scattergl", mode: "lines", line: {width: 1.5, color: "#2f6db5"}}],
      {margin: {t: 20, r: 20}, xaxis: {title: {text: v.xlabel}, tickformat: v.integer_x ? "d" : ""},
       yaxis: {title: {text: v.ylabel}}}, PLOT_CONFIG);
  } else if (v.kind === "image") {
    const div = el("div", {class: "plot"});
    box.append(div, info);
    Plotly.newPlot(div, [{z: v.z, type: "heatmap", colorscale: "Viridis", zmin: v.zmin, zmax: v.zmax}],
      {margin: {t: 20, r: 20}, yaxis: {autorange: "reversed", scaleanchor: "x", title: {text: "y [pixel]"}},
       xaxis: {title: {text: "x [pixel]"}}}, PLOT_CONFIG);
  } else if (v.kind === "plotly") {
    const div = el("div", {class: "plot"});
    box.append(div);
    Plotly.newPlot(div, v.figure.data, v.figure.layout || {}, PLOT_CONFIG);
  } else if (v.kind === "figure") {
    box.append(el("img", {class: "figure", src: `data:image/png;base64,${v.png}`, alt: "figure"}));
  } else if (v.kind === "tabs") {
    const tabs = el("div", {class: "tabs"}), body = el("div");
    box.append(tabs, body);
    const names = Object.keys(v.tabs);
    const show = (name) => {
      tabs.querySelectorAll("button").forEach((b) => b.classList.toggle("on", b.textContent === name));
      body.replaceChildren();
      drawValue(body, v.tabs[name]);
    };
    for (const n of names) tabs.append(el("button", {type: "button", text: n, onclick: () => show(n)}));
    if (names.length) show(names[0]);
  } else {
    const big = v.kind !== "error" && v.text && v.text.length < 80 && !v.text.includes("\n");
    box.append(el(big ? "div" : "pre", {class: big ? "big" : "text" + (v.kind === "error" ? " error" : ""), text: v.text}), info);
  }
}

async function openInspect(col, row) {
  const box = el("div", {id: "inspect"}, el("div", {class: "info", text: "Reading…"}));
  openModal(`Run ${row.r} · ${col.title.replace(/\//g, " › ")}${col.units ? ` [${col.units}]` : ""} (${col.key})`, box);
  try {
    const [v] = await Promise.all([getJSON(`${API}/inspect?id=${encodeURIComponent(row.id)}&name=${encodeURIComponent(col.key)}`), loadPlotly()]);
    box.replaceChildren();
    box.dataset.kind = v.kind;
    drawValue(box, v);
  } catch (e) { box.replaceChildren(el("pre", {class: "text error", text: e.message})); }
}

function plotColumns() {
  return state.columns.filter((c) => ["#run", "#start", "#added"].includes(c.key) || (c.variable && c.numeric));
}

async function openPlot() {
  const cols = plotColumns();
  const xs = el("select", {id: "plot-x"}), ys = el("select", {id: "plot-y"});
  for (const c of cols) {
    const label = c.title.replace(/\//g, " › ") + (c.units ? ` [${c.units}]` : "");
    xs.append(el("option", {value: c.key, text: label}));
    ys.append(el("option", {value: c.key, text: label}));
  }
  xs.value = "#run";
  const firstVar = cols.find((c) => c.variable);
  if (firstVar) ys.value = firstVar.key;
  const div = el("div", {class: "plot", id: "plot-div"});
  const swap = el("button", {type: "button", text: "Swap axes", onclick: () => { const t = xs.value; xs.value = ys.value; ys.value = t; drawPlot(); }});
  xs.addEventListener("change", () => drawPlot());
  ys.addEventListener("change", () => drawPlot());
  openModal("Plot across runs",
    el("div", {class: "form-row"}, el("label", {class: "axis", text: "x"}), xs,
      el("label", {class: "axis", text: "y"}), ys, swap), div,
    el("div", {class: "info", text: "Hover a point for its run; the plot follows new values."}));
  state.plot = {xs, ys, div};
  await loadPlotly();
  drawPlot();
}

async function drawPlot() {
  const p = state.plot;
  if (!p) return;
  try {
    const d = await getJSON(`${API}/plot?x=${encodeURIComponent(p.xs.value)}&y=${encodeURIComponent(p.ys.value)}`);
    if (state.plot !== p) return;
    const conv = (vals, isTime) => isTime ? vals.map((t) => new Date(t * 1000)) : vals;
    const last = d.runs.length ? Math.max(...d.runs) : null;
    Plotly.react(p.div, [{x: conv(d.x, d.xtime), y: conv(d.y, d.ytime), text: d.runs, type: "scatter", mode: "markers",
      marker: {size: 8, color: d.runs.map((r) => r === last ? "#c2410c" : "#2f6db5"), line: {color: "white", width: 0.8}},
      hovertemplate: "Run %{text}<br>x: %{x}<br>y: %{y}<extra></extra>"}],
      {margin: {t: 20, r: 20}, xaxis: {title: {text: d.xlabel}}, yaxis: {title: {text: d.ylabel}}, hovermode: "closest"},
      PLOT_CONFIG);
    p.div.dataset.points = String(d.runs.length);
  } catch (e) { message(`Plot failed: ${e.message}`, true); }
}

function refreshPlotSoon() {
  clearTimeout(state.plotTimer);
  state.plotTimer = setTimeout(drawPlot, 700);
}

/* -- side panel: columns, logbook ---------------------------------------------------------------- */

function openSide(what, title, ...body) {
  $("side").hidden = false;
  $("side").dataset.what = what;
  $("side-title").textContent = title;
  $("side-body").replaceChildren(...body);
}

function openColumns() {
  const search = el("input", {type: "search", class: "col-search", placeholder: "Find a column"});
  const list = el("div", {class: "checklist", style: "max-height:none"});
  const fill = () => {
    const q = search.value.toLowerCase();
    list.replaceChildren();
    for (const cs of state.grid.getColumnState()) {
      const col = state.columns.find((c) => c.key === cs.colId);
      if (!col) continue;
      const label = col.variable ? `${col.title}${col.units ? ` [${col.units}]` : ""}` : col.title;
      if (q && !label.toLowerCase().includes(q) && !col.key.toLowerCase().includes(q)) continue;
      const box = el("input", {type: "checkbox", checked: !cs.hide, "data-key": col.key});
      box.addEventListener("change", () => state.grid.setColumnsVisible([col.key], box.checked));
      list.append(el("label", {title: col.key}, box, " " + label));
    }
  };
  search.addEventListener("input", fill);
  fill();
  openSide("columns", "Columns", search, list,
    el("div", {class: "info", text: "Drag column headers to reorder them. The layout is remembered for you and this table."}));
}

async function openLogbook() {
  const list = el("div");
  const input = el("textarea", {rows: 3, style: "width:100%", placeholder: "A time comment for the logbook", id: "logbook-text"});
  const add = el("button", {type: "button", class: "primary", text: "Add", id: "logbook-add"});
  add.addEventListener("click", async () => {
    if (!input.value.trim()) return;
    try { await send("POST", `${API}/logbook`, {text: input.value}); input.value = ""; openLogbook(); }
    catch (e) { message(`Not saved: ${e.message}`, true); }
  });
  openSide("logbook", "Logbook", state.editor ? el("div", {}, input, add) : "", list);
  try {
    const res = await getJSON(`${API}/logbook`);
    for (const c of res.comments.slice().reverse()) {
      list.append(el("div", {class: "logbook-entry"},
        el("div", {class: "when", text: `${new Date(c.timestamp * 1000).toLocaleString()}${c.author ? " · " + c.author : ""}${c.run ? " · run " + c.run : ""}`}),
        el("div", {class: "text", text: c.text})));
    }
    if (!res.comments.length) list.append(el("div", {class: "info", text: "No time comments yet."}));
  } catch (e) { list.append(el("div", {text: e.message})); }
}

/* -- reprocessing -------------------------------------------------------------------------------- */

function openReprocess() {
  const rows = selectedRows();
  const which = el("select", {id: "rp-runs"},
    el("option", {value: "sel", text: rows.length ? `Selected: ${rows.map((r) => r.r).join(", ")}` : "Selected (none)", disabled: !rows.length}),
    el("option", {value: "all", text: `All ${state.rowsById.size} runs`}));
  which.value = rows.length ? "sel" : "all";
  const force = el("input", {type: "checkbox", id: "rp-force"});
  const forceRow = el("label", {title: "All runs: only the values whose code, manual inputs or data changed (and what depends on them) are computed, unless this is checked (amore-proto reprocess all --force)"},
    force, " Recompute every value, not only the stale ones" + (state.status && state.status.stale ? ` (${state.status.stale} now)` : ""));
  const syncForce = () => { force.disabled = which.value !== "all"; };
  which.addEventListener("change", syncForce);
  syncForce();
  const where = el("select", {id: "rp-where"}, el("option", {value: "local", text: "On this machine (small work in the running backend's workers)"}),
    el("option", {value: "slurm", text: "On Slurm, as array jobs", disabled: !state.slurm}));
  const list = el("div", {class: "checklist"});
  for (const c of state.columns.filter((c) => c.variable && !c.manual && !c.key.startsWith("amore.")))
    list.append(el("label", {}, el("input", {type: "checkbox", checked: true, value: c.key}), ` ${c.title} (${c.key})`));
  const go = el("button", {type: "button", class: "primary", id: "rp-go", text: "Reprocess"});
  go.addEventListener("click", async () => {
    const boxes = [...list.querySelectorAll("input")];
    const names = boxes.filter((b) => b.checked).map((b) => b.value);
    if (!names.length) { message("Choose at least one variable.", true); return; }
    try {
      const res = await send("POST", `${API}/reprocess`, {ids: which.value === "all" ? "all" : rows.map((r) => r.id),
        names: names.length === boxes.length ? null : names, slurm: where.value === "slurm",
        force: which.value === "all" && force.checked});
      state.jobs[res.id] = {id: res.id};
      showJobPanel(res.id);
    } catch (e) { message(`Not started: ${e.message}`, true); }
  });
  openModal("Reprocess runs", el("div", {class: "form-row"}, el("label", {text: "Runs"}), which),
    el("div", {class: "form-row"}, forceRow),
    el("div", {class: "form-row"}, el("label", {text: "Where"}), where),
    el("div", {}, el("b", {text: "Variables"})), list, el("div", {class: "form-row"}, go));
}

function showJobPanel(id) {
  const bar = el("progress", {class: "progress", id: "job-progress", max: 1, value: 0});
  const log = el("pre", {class: "text job-log", id: "job-log"});
  const cancel = el("button", {type: "button", id: "job-cancel", text: "Cancel"});
  cancel.addEventListener("click", async () => {
    try { await send("POST", `${API}/jobs/${encodeURIComponent(id)}/cancel`, {}); }
    catch (e) { message(e.message, true); }
  });
  const st = el("div", {class: "info", id: "job-state", text: "Starting…"});
  openModal("Reprocessing", bar, st, log, el("div", {class: "form-row"}, cancel));
  $("modal-body").dataset.job = id;
  if (state.jobs[id] && state.jobs[id].job) showJob(id, state.jobs[id].job);
}

function showJob(id, job) {
  state.jobs[id] = {id, job};
  if ($("modal").hidden || $("modal-body").dataset.job !== id) {
    if (!job.running) message(`Reprocessing ${job.cancelled ? "cancelled" : job.exit_code === 0 ? "done" : "finished with exit code " + job.exit_code}.`, job.exit_code !== 0 && !job.cancelled);
    return;
  }
  $("job-progress").max = job.expected;
  $("job-progress").value = job.done;
  $("job-state").textContent = job.running ? `${job.done} / ${job.expected} runs` :
    job.cancelled ? "Cancelled." : job.exit_code === 0 ? "Done." : `Finished with exit code ${job.exit_code}.`;
  $("job-log").textContent = job.lines.join("\n");
  $("job-cancel").disabled = !job.running;
}

/* -- export -------------------------------------------------------------------------------------- */

function exportTable(fmt) {
  const cs = state.grid.getColumnState();
  const sorted = cs.find((c) => c.sort);
  const q = $("filter").classList.contains("bad") ? "" : state.filterText;
  const params = new URLSearchParams({fmt, q, sort: sorted ? sorted.colId : "#run",
    desc: sorted && sorted.sort === "asc" ? "0" : "1",
    cols: cs.filter((c) => !c.hide).map((c) => c.colId).join(",")});
  location.href = `${API}/export?${params}`;
}

/* -- start --------------------------------------------------------------------------------------- */

function wire() {
  let filterTimer = null;
  $("filter").addEventListener("input", (e) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => applyFilter(e.target.value), 350);
  });
  $("filter").addEventListener("keydown", (e) => {
    if (e.key === "Enter") { clearTimeout(filterTimer); applyFilter(e.target.value); }
  });
  $("goto").addEventListener("keydown", (e) => { if (e.key === "Enter") jumpTo(e.target.value); });
  $("btn-columns").addEventListener("click", openColumns);
  $("btn-plot").addEventListener("click", openPlot);
  $("btn-logbook").addEventListener("click", openLogbook);
  $("btn-set").addEventListener("click", () => openSetValue(null, selectedRows()));
  $("btn-reprocess").addEventListener("click", openReprocess);
  $("btn-csv").addEventListener("click", () => exportTable("csv"));
  $("btn-md").addEventListener("click", () => exportTable("md"));
  $("btn-link").addEventListener("click", async () => {
    const rows = selectedRows();
    if (!rows.length) { message("Select a run first.", true); return; }
    const link = runLink(rows[0]);
    document.body.dataset.link = link;
    message(`Link: ${link}`, false);
    // the clipboard may be refused (or never answer) outside a secure context
    if (navigator.clipboard && window.isSecureContext)
      navigator.clipboard.writeText(link).then(() => message(`Copied: ${link}`, false), () => {});
  });
  $("tall").checked = state.tall = localStorage.getItem("amore.tall") === "1";
  $("tall").addEventListener("change", (e) => {
    state.tall = e.target.checked;
    localStorage.setItem("amore.tall", state.tall ? "1" : "0");
    $("grid").classList.toggle("tall", state.tall);
    state.grid.setGridOption("rowHeight", state.tall ? 64 : 28);
    state.grid.resetRowHeights();
  });
  $("modal-close").addEventListener("click", closeModal);
  $("modal").addEventListener("click", (e) => { if (e.target === $("modal")) closeModal(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("modal").hidden) closeModal(); });
  $("side-close").addEventListener("click", () => { $("side").hidden = true; });
  $("message-close").addEventListener("click", () => { $("banner-message").hidden = true; });
  window.addEventListener("hashchange", readHash);
}

function readHash() {
  const m = /run=([^&]+)/.exec(location.hash);
  if (m) { state.pendingJump = decodeURIComponent(m[1]); if (state.grid) maybeJump(); }
}

window.addEventListener("DOMContentLoaded", () => {
  if (agGrid.ModuleRegistry && agGrid.AllCommunityModule) agGrid.ModuleRegistry.registerModules([agGrid.AllCommunityModule]);
  wire();
  readHash();
  loadTable().catch((e) => message(`Could not load the table: ${e.message}`, true));
});

window.amore = {state, jumpTo, applyFilter, showStatus};
