"""``Pipeline.default()`` inside a context file, as DAMNIT 0.4.0 has it: what a file adds to its
default pipeline is part of the file (besides its module-level variables and groups), or, with
``Pipeline.set_default(pipe)``, only that pipeline's variables are; each loading of a context file
has its own default pipeline."""
import textwrap
import threading

import pytest

from backend.ctxrunner.context import ContextFile, ContextFileError
from tests.conftest import PROPOSAL

DEFAULT_PIPELINE_CONTEXT = '''
from damnit_ctx import Variable, Group, Pipeline

@Variable(title="Trains")
def trains(run):
    return len(run.train_ids)

@Group
class Counter:
    factor: int = 1

    @Variable(title="Scaled")
    def scaled(self, run, n: "var#trains"):
        return n * self.factor

    @Variable(title="Plus one")
    def plus_one(self, run, s: "self#scaled"):
        return s + 1

counter = Counter(factor=2)                       # found at module level, as always
Pipeline.default().add(Counter(name="tenfold", factor=10))   # only in the default pipeline
Pipeline.default().add({"thrice": Counter(factor=3)})        # named by its key
Pipeline.default().add(counter, trains)           # already found: not twice
'''


def test_groups_added_to_the_default_pipeline_get_columns(make_context_dir, write_run,
                                                          run_processor):
    """Through the real worker into the database: the module-level variables and group, and
    the groups added only to ``Pipeline.default()``, each once."""
    ctx = make_context_dir(DEFAULT_PIPELINE_CONTEXT)
    write_run(1, ntrains=12)
    db, _pool, proc = run_processor(ctx)
    out = proc.process(PROPOSAL, 1, "all")
    assert out.status == "done", out
    values = db.get_values(PROPOSAL, 1)
    got = {name: v.value for name, v in values.items() if not name.startswith("amore.")}
    assert got == {"trains": 12, "counter.scaled": 24, "counter.plus_one": 25,
                   "tenfold.scaled": 120, "tenfold.plus_one": 121,
                   "thrice.scaled": 36, "thrice.plus_one": 37}
    titles = {v.name: v.title for v in db.get_variables()}
    assert titles["tenfold.scaled"] == "tenfold/Scaled"
    assert titles["thrice.plus_one"] == "thrice/Plus one"


SET_DEFAULT_CONTEXT = '''
from damnit_ctx import Variable, Pipeline

@Variable
def base(run):
    return 1

@Variable
def chosen(run):
    return 2

pipe = Pipeline()
pipe.add(chosen)
Pipeline.set_default(pipe)
'''


def test_set_default_makes_only_that_pipelines_variables_the_files():
    ctx = ContextFile.from_str(SET_DEFAULT_CONTEXT)
    assert list(ctx.variables) == ["chosen"]
    out = ctx.execute(object(), run_number=1, proposal=PROPOSAL)
    assert (out["chosen"].value, "base" in out) == (2, False)


def test_each_loading_has_its_own_default_pipeline():
    """A context file loaded while another one loads (here by the outer file itself) does not
    share its default pipeline; nor do two files loaded one after the other, nor a file whose
    loading failed."""
    outer = textwrap.dedent(f'''
        from damnit_ctx import Variable, Pipeline

        @Variable
        def outer(run):
            return 1

        INNER = Pipeline.from_str({SET_DEFAULT_CONTEXT!r})
        Pipeline.default().add(outer)
    ''')
    ctx = ContextFile.from_str(outer)
    assert list(ctx.variables) == ["outer"]

    failing = textwrap.dedent('''
        from damnit_ctx import Variable, Pipeline

        @Variable
        def bad(run):
            return 1

        Pipeline.default().add(bad)
        raise RuntimeError("boom")
    ''')
    with pytest.raises(ContextFileError, match="line 9: RuntimeError: boom"):
        ContextFile.from_str(failing)
    plain = "from damnit_ctx import Variable\n@Variable\ndef only(run):\n    return 3\n"
    assert list(ContextFile.from_str(plain).variables) == ["only"]
    assert list(ContextFile.from_str(SET_DEFAULT_CONTEXT).variables) == ["chosen"]


def test_default_pipeline_mistakes_are_clear_errors():
    with pytest.raises(ContextFileError, match="line 2: TypeError: Pipeline.set_default expects "
                                               "a Pipeline instance, not str"):
        ContextFile.from_str("from damnit_ctx import Pipeline\nPipeline.set_default('x')\n")
    unnamed = textwrap.dedent('''
        from damnit_ctx import Variable, Group, Pipeline

        @Group
        class G:
            @Variable
            def val(self, run):
                return 1

        Pipeline.default().add(G())
    ''')
    with pytest.raises(ContextFileError, match="<context>: group instance of 'G' has no name"):
        ContextFile.from_str(unnamed)


def test_outside_a_context_file_the_default_pipeline_is_one_per_thread():
    """In a notebook, ``Pipeline.default()`` is the same pipeline on every call (in another
    thread another one), and evaluates what was added to it."""
    from amore.context import Pipeline, Variable

    @Variable
    def answer(run):
        return 42

    pipe = Pipeline.default()
    assert Pipeline.default() is pipe and pipe.name == "default"
    pipe.add(answer)
    assert Pipeline.default().evaluate(object(), proposal=PROPOSAL)["answer"] == 42
    other = []
    t = threading.Thread(target=lambda: other.append(Pipeline.default()))
    t.start()
    t.join()
    assert other[0] is not pipe and "answer" not in other[0].variables
