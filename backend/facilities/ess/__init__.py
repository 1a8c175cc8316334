"""ESS (its plug-in: :mod:`.facility`).

* :mod:`.source` - the file writer's ``pl72`` / ``6s4t`` / ``wrdn`` flatbuffers on Kafka;
* :mod:`.run` - worker side: the run's NeXus file, opened read-only (retried while the file
  writer still holds it);
* :mod:`.demo` - NeXus files and file writer messages as ESS makes them (tests, the demo).

Nothing is imported here: the context-file worker imports this package on the way to :mod:`.run`.
"""
