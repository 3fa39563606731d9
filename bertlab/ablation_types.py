"""The records an ablation file becomes: ``Ablation`` and its ``Arm``s (``bertlab.ablation_spec`` reads and checks
them; ``bertlab.shared_pretraining`` and ``bertlab.ablation`` use them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bertlab.pipeline_spec import Stage, apply_overrides, load_pipeline, skip_stages


@dataclass
class Arm:
    name: str
    config: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    pipeline: str | None = None
    set: dict[str, list[str]] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)
    note: str | None = None
    pretrain: str | None = None
    from_milestone: int | None = None
    baseline: str | None = None

    @property
    def group(self) -> str:
        """The pre-training group whose shared run the arm fine-tunes from: ``pretrain``, else its own name."""
        return self.pretrain or self.name

    def stages(self, where: str | None = None) -> list[Stage]:
        """The stages of the arm's pipeline but those it skips, each with the arguments ``set`` gives it after
        its own."""
        where = where or f"arm {self.name}"
        stages = apply_overrides(load_pipeline(self.pipeline)[1], self.set, f"{where}: set")
        return skip_stages(stages, self.skip, f"{where}: skip", self.set)


@dataclass
class Ablation:
    name: str
    root: str
    base: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    metrics: list[str] = field(default_factory=lambda: ["test/acc", "test/f1"])
    baseline: str | None = None
    arms: list[Arm] = field(default_factory=list)
    pretrain_seed: int | None = None
    pretrain_seeds: list[int] | None = None

    @property
    def pretraining_seeds(self) -> list[int]:
        """The pre-training seeds: ``pretrain_seeds``, or ``[pretrain_seed]``, or none."""
        if self.pretrain_seeds:
            return list(self.pretrain_seeds)
        return [] if self.pretrain_seed is None else [self.pretrain_seed]
