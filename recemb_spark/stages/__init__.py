"""Stage wiring: each module has ``run(spark, cfg, run_date) -> StageResult`` that reads its
inputs from the warehouse (or the input), calls the pure functions, and writes its outputs."""
