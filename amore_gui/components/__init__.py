"""What the GUI shows, without Qt: the columnar run table, the fast database reader, session
state (settings, column layout, filters), export and formatting. Testable without a display."""
