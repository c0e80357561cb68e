"""The runner: what a stage is (:mod:`.stage`), one run of stages with manifests, lock,
resume and summary (:mod:`.runs`, :mod:`.lock`, :mod:`.progress`), and the pipeline of the
declared stages (:mod:`.pipeline`)."""
