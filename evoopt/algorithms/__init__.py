"""Population algorithms, one per file. Importing this package registers them all in
:data:`evoopt.OPTIMIZERS`. Each module adds its own import line below."""

__all__: list[str] = []
