"""Where a run's time goes, and `--time-budget`: training stops when the time left is what the
final evaluation, the test set, model.keras and the export are estimated to need.

The estimate is measured, not guessed, once the first evaluation has run: the final validation
and test cost `Task.final_evaluation_cost()` times one in-training evaluation (more examples,
the final beam), the validation once per weight candidate (best, averaged); before that, a
provisional share of the budget is held back. The export's time is a guess (tracing the serving
graph: 8 s for the small preset on a 2-core CPU, more for a JAX run's TensorFlow process), the one
cost not seen before it runs.
"""

import contextlib
import time

PHASES = ("preparing", "training", "evaluating", "final evaluation", "saving and export")
# Held back before any evaluation has been timed.
PROVISIONAL_RESERVE = 0.25
EXPORT_SECONDS = 25.0
# The estimate is multiplied by this: decoding speed varies with what the model has learned
# (an early model's translations run on to the length limit, a trained one's stop).
SAFETY = 1.3


class RunClock:
    """Seconds per phase since `started`; with `budget` (seconds), says when training must stop."""

    def __init__(self, started, budget=None):
        self.started = started
        self.budget = budget
        self.seconds = {phase: 0.0 for phase in PHASES}
        self.evaluation_seconds = None  # the last in-training evaluation's (see `evaluation`)
        self.stopped_by_budget = False
        self._phase_start = started
        self._current = "preparing"

    def elapsed(self):
        return time.time() - self.started

    @contextlib.contextmanager
    def phase(self, name):
        """Time inside counts to `name`; what follows counts to the phase that was running."""
        outer = self._switch(name)
        try:
            yield
        finally:
            self._switch(outer)

    @contextlib.contextmanager
    def evaluation(self):
        """An in-training evaluation: its time counts to "evaluating", and its duration is what
        `reserve` scales."""
        started = time.time()
        with self.phase("evaluating"):
            yield
        self.evaluation_seconds = time.time() - started

    def switch(self, name):
        """From now on, time counts to `name`."""
        self._switch(name)

    def _switch(self, name):
        if name not in self.seconds:
            raise ValueError(f"Unknown phase {name!r}; phases: {PHASES}")
        now = time.time()
        self.seconds[self._current] += now - self._phase_start
        previous, self._current, self._phase_start = self._current, name, now
        return previous

    def reserve(self, final_cost, candidates, export):
        """Seconds the end of the run is estimated to need: `final_cost` = (validation, test),
        each in in-training evaluations; the validation once per weight candidate, the test once;
        then model.keras and the export."""
        if self.evaluation_seconds is None:
            return PROVISIONAL_RESERVE * self.budget if self.budget else 0.0
        validation, test = final_cost
        seconds = self.evaluation_seconds * (validation * candidates + test)
        return SAFETY * seconds + (EXPORT_SECONDS if export else 5.0)

    def out_of_time(self, reserve):
        """True once the budget minus `reserve` has passed (never without a budget)."""
        if self.budget is None:
            return False
        return self.elapsed() + reserve >= self.budget

    def summary(self):
        """{phase: seconds} with the total and the budget, for metrics.json."""
        self._switch(self._current)  # closes the running phase's count up to now
        result = {phase: round(seconds, 1) for phase, seconds in self.seconds.items()}
        result["total"] = round(self.elapsed(), 1)
        if self.budget is not None:
            result["budget"] = self.budget
            result["stopped_by_budget"] = self.stopped_by_budget
        return result

    def describe(self):
        """One line: how the time was spent, and against the budget."""
        summary = self.summary()
        parts = ", ".join(f"{summary[phase]:.0f} s {phase}" for phase in PHASES)
        line = f"time: {parts}; {summary['total']:.0f} s in all"
        if self.budget is not None:
            within = "within" if summary["total"] <= self.budget else "OVER"
            line += f" ({within} the budget of {self.budget:.0f} s)"
        return line
