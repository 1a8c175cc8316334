"""AMORE's GUI: ``components/`` holds the Qt-free models and session state, ``_qt/`` the widgets
that display them and forward user actions."""
