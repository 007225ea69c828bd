"""The bottom layer: user errors and the one exit path (cli), logging set-up, atomic writes and checked reads (io),
every checked bound (bounds), default paths, device/precision/distributed runtime, metrics, survival analysis and
plots."""
