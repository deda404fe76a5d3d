"""Jobs over a run directory: fitting a file into it (:mod:`~inr_fast.jobs.fit`) and evaluating it
(:mod:`~inr_fast.jobs.evaluate`). They sit above the run-directory format (:mod:`inr_fast.store`) and
below the report and the commands."""
