"""One module per ``inr-fast`` command: ``add_arguments(parser)`` and ``run(args)``; the library code
they call has no argparse. :mod:`inr_fast.cli` wires them up."""
