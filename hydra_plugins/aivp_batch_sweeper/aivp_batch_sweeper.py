"""`hydra/sweeper: aivp` — Hydra's basic sweeper (same override syntax, same cartesian product)
that plans, validates and prices every member before launching any (see `aivp_batch.sweep`),
names each member's folder from its swept overrides, launches the members (one after another, or
in parallel under a launcher) under one `budget_usd`, writes the sweep's gallery
(`aivp_batch.sweep_index`) when the last member is done, and leaves the sweep's exit status for
`aivp_batch.cli.main`.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional  # noqa: UP035 - Hydra's structured configs need them

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


@dataclass
class AivpSweeperConf:
    _target_: str = "hydra_plugins.aivp_batch_sweeper.aivp_batch_sweeper.AivpSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(group="hydra/sweeper", name="aivp", node=AivpSweeperConf, provider="aivp-batch")


class AivpSweeper(BasicSweeper):
    def sweep(self, arguments: List[str]) -> Any:  # noqa: UP006
        from aivp_batch import sweep as sw

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        params = [*self._parse_config(), *arguments]
        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(
            params
        )
        swept = [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]
        batches = self.split_arguments(parsed, None)
        combos = [list(c) for batch in batches for c in batch]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        names = sw.unique_names([sw.name_member(c, swept) for c in combos])
        members = [
            sw.Member(name=name, overrides=[*combo, f"hydra.sweep.subdir='{name}'"])
            for name, combo in zip(names, combos, strict=True)
        ]
        loader = self.hydra_context.config_loader

        def compose(overrides: list[str]) -> Any:
            return loader.load_sweep_config(self.config, overrides)

        dry_run = bool(OmegaConf.select(self.config, "dry_run", default=False))  # not swept: the same for all
        table = sw.plan_sweep(members, compose, sweep_dir, dry_run)
        print(table, flush=True)
        bad = [m for m in members if m.error]
        if bad:
            for m in bad:
                print(f"aivp-batch: error: {m.name}: {m.error}", file=sys.stderr)
            print(
                f"aivp-batch: error: {len(bad)} of {len(members)} sweep members have bad input: "
                "no member was run, nothing spent",
                file=sys.stderr,
            )
            sw.finish(members, sweep_dir, table, ran=False)
            return []
        if dry_run:
            sw.finish(members, sweep_dir, table, ran=False)
            return []
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        def launch(overrides: List[List[str]]) -> Any:  # noqa: UP006
            size = self.max_batch_size or len(overrides) or 1
            results = []
            for start in range(0, len(overrides), size):
                batch = self.launcher.launch(overrides[start : start + size], initial_job_idx=start)
                for r in batch:
                    _ = r.return_value  # a member that raised raises here, as in the basic sweeper
                results.extend(batch)
            return results

        returns = sw.run_members(members, launch, sweep_dir)
        sw.finish(members, sweep_dir, table, ran=True)
        from aivp_batch.sweep_index import index_after_sweep

        index_after_sweep(sweep_dir)  # index.json, index.html, contact-sheet.png
        return returns
