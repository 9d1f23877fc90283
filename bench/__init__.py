"""rtclassify benchmarks: `rtclassify bench` runs `bench.suite`."""
