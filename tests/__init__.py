"""mktsframe's test suite (a package so that module names here never clash with subdirectories')."""
