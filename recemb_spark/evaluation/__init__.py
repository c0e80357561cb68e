"""The evaluation: the held-out pairs (:mod:`.holdout`), scoring embeddings and baselines on
them (:mod:`.scoring`), and the day-over-day metrics of nightly runs (:mod:`.daily_metrics`)."""
