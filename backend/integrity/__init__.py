"""Checks that let people trust the run table: data consistency (:mod:`.datacheck`) and file
checksums (:mod:`.checksums`). Pure functions over files and arrays; no database, Kafka or Qt."""
