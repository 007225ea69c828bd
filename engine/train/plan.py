"""What a training run will do, said before it starts and estimated after its first epoch: how many networks of
which architectures for how many epochs, then the whole run's time, then each network as it starts (at the RESULT
level: ``--quiet`` keeps them)."""
from __future__ import annotations

import collections
import dataclasses
import logging
import time

from engine.runs import SINGLE
from utils.cli import RESULT

from .recipes import SEED_RECIPES

logger = logging.getLogger("train")


@dataclasses.dataclass
class Plan:
    """The run's networks in training order: (member name, architecture, epochs)."""

    networks: list
    records: int
    started: float = dataclasses.field(default_factory=time.monotonic)
    estimated: bool = False
    current: int = 0  # the network being trained (a resumed run starts past those it finished)
    note: str | None = None  # said after the plan: what else would train on these records (see recipe_note)

    def announce(self) -> None:
        kinds = collections.Counter((arch, epochs) for _, arch, epochs in self.networks)
        shown = ", ".join(f"{n} × {arch} ({epochs} epochs)" for (arch, epochs), n in kinds.items())
        logger.log(RESULT, f"plan: {len(self.networks)} network(s) — {shown} — on {self.records} ECGs")
        if self.note:
            logger.info(self.note)

    def starting(self, member: str) -> None:
        self.current = next(i for i, (name, _, _) in enumerate(self.networks) if name == member)
        if len(self.networks) > 1:
            _, arch, epochs = self.networks[self.current]
            logger.log(RESULT, f"network {self.current + 1}/{len(self.networks)}: {member} ({arch}, {epochs} epochs)")

    def epochs_left(self, epoch: int) -> int:
        """Epochs from ``epoch`` (1-based, of the current network) to the run's end, that one included."""
        return self.networks[self.current][2] - epoch + 1 + sum(e for _, _, e in self.networks[self.current + 1:])

    def epoch_done(self, epoch: int, seconds: float) -> None:
        """After the first epoch this process trains: the time of what is left of the run (the whole run unless it
        was resumed), if every epoch costs what this one did."""
        if self.estimated:
            return
        self.estimated = True
        left = self.epochs_left(epoch)
        what = "the whole run" if left == sum(e for _, _, e in self.networks) else "the rest of the run"
        logger.log(RESULT, f"the first epoch took {seconds:.1f} s: {what} ({left} epochs) should take about "
                           f"{_duration(seconds * left)} if every epoch costs as much")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def plan_of(settings, records: int) -> Plan:
    """The networks ``settings`` (engine.train.settings.TrainSettings) train: per fold its seeds, then its
    partners (their own recipe's epochs); one network for a single split."""
    note = recipe_note(settings.run.recipe, settings.data.input)
    if settings.run.folds == 1:
        return Plan([(SINGLE, settings.model.arch, settings.recipe.nepoch)], records, note=note)
    partner, seeds, networks = settings.partner(), settings.recipe.seeds, []
    for fold in range(settings.run.folds):
        for j, member in enumerate(settings.fold_members(fold)):
            own = settings if j < seeds else partner
            networks.append((member, own.model.arch, own.recipe.nepoch))
    return Plan(networks, records, note=note)


def recipe_note(recipe: str, given_input: str | None) -> str | None:
    """For a published system's recipe on the user's own records (--input; the MAIC challenge's folders train the
    MAIC models as they should): that it is one, and what this project's recipes would train instead (the MAIC
    recipe is what train_interface picks when neither --recipe nor --arch is given)."""
    if given_input is None or recipe not in SEED_RECIPES:
        return None
    return (f"note: the {recipe} recipe reproduces a published system as it was; on your own records --recipe "
            f"modern trains this project's most accurate ensemble, --arch BaselineNet --recipe baseline the shipped "
            f"model's networks and --preset quick a first model (their accuracy and time: docs/recipes.md)")
