"""One file per row of the benchmark table; each has ``run(settings) -> list[Measurement]``."""
