"""The bottom floor: TensorFlow-free names, defaults and console helpers that every other
package (net/, dataset/, preprocessing/, evaluation/, utility/, the entry scripts, tools/ and
benchmarks/) may import, and that import nothing of the project's."""
