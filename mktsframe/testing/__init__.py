"""Test helpers shipped with the package, so that a backend living in another package can be held
to the same rules: :mod:`.conformance` (the suite every backend passes) and :mod:`.s3` (a real
S3 endpoint on loopback, for object-storage tests and benchmarks).
"""
