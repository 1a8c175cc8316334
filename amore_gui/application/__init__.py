"""The application layer: everything a front-end does, without Qt.

Opening or creating a context directory, the columnar run table and its fast database reader,
live updates, session state (settings, column layout, filters), manual edits, the backend's
state, export and formatting. Every front-end (the Qt GUI in :mod:`amore_gui._qt`) calls these
and nothing below them; testable without a display."""
