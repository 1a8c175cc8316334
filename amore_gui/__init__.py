"""AMORE's front-ends. ``application/`` is the Qt-free application layer every front-end goes
through (open a context directory, read the table, follow live updates, edit, control the
backend); ``_qt/`` is the Qt GUI, which only displays and forwards."""
