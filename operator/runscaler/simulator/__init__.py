"""A protocol-faithful GitHub + Actions service for tests, demos and benchmarks."""
