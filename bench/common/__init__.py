"""Pieces every bench CLI shares; each module's docstring says what it holds. Import the modules themselves: this
package imports nothing, so that `--help` and argument errors do not wait for torch."""
