"""The paper's findings tested with seeds (issue 23), and the open-set CMP-NAS search (issue 20.3).

CMP-NAS (docs/nas.md) claims, in our words: (F1) the heterogeneous accuracy of small models does
not follow their FLOPs or their own (homogeneous) accuracy; (F2) without compatibility training, a
supernet path's homogeneous accuracy predicts its heterogeneous accuracy poorly; (F3) training the
supernet for compatibility makes its ranking of paths a good predictor of their retrained
heterogeneous accuracy; and the mixed reward R3 beats the single ones. Runs on the experiment
runner (bench/runner.py; protocols, galleries and query-model recipes in bench/protocols.py).

Parts (--parts; every choice inside a search is made on validation). A call runs the runs of its
parts as one schedule: a run starts as soon as what it needs has finished (a search its supernet, a
retrain its search), the parts' order given is the priority, so --jobs stay busy across stages; each
call continues where the last stopped, a finished run is never redone:
  open_search  issue 20.3: the supernet trained on the open set's training classes only
               (data.val_classes held out, the select-phase gallery), searched under --budget with
               R3 on the class-disjoint validation classes; writes docs/results/cmpnas_open_set.json
               with the arch in the form `bench/gallery_aware.py --cmpnas-arch open_set=ARCH` takes.
  f            F1-F3, closed set, seed 0: --paths paths sampled at the budget (the search's random
               draws), each scored in the supernet trained with --method and in the one trained
               without compatibility (inherited weights, BN recalibrated, validation split); the
               first --retrain-paths retrained from scratch with --method for --path-epochs and
               scored on validation, with the hand-designed nets; Kendall τ with bootstrap
               intervals between supernet and retrained scores.
  ablation     closed set, --seeds: per compat method (--method, and --paper-method, BCT, the
               paper's) supernet + search (R3, R1, R2; R3 on the no-compat supernet) + retrain
               (--epochs) scored on TEST, beside ShuffleNetV2 x0.5 trained the same way and a path
               drawn at random under the budget (variant random: no supernet, no search; draw seed
               100 + the seed), trained the same way (does the search pay, or only its space?).
  open         open set, --seeds: R3 on the --method supernet against R3 on the no-compat supernet,
               both searched on the training classes only (as open_search), retrained on the 5
               training classes, scored on the held-out test classes; ShuffleNetV2 x0.5 and the
               random path beside.
  f_wide       F1-F3 where the paths differ (ours): at the budget the paths retrain about alike, so no
               ranking can show; --wide-paths paths, one per equal FLOPs bin of [--wide-min-mflops,
               budget], scored in the F study's two supernets and each retrained (seed 0), its seed
               noise taken from the F study's retest; F5: does the compat supernet rank them better
               than their FLOPs do (paired Δτ)?
Rewards as in the code (hetsearch.nas.rewards): r1 = M(a,a) homogeneous only, r2 = M(a,g)
heterogeneous only, r3 = M(a,g) + 0.5 M(a,a). (Issue 23 swaps the names of R1 and R2.)

Each finished run writes runs/.../ps_rows/<run>.json (git revision, command, seed);
docs/results/paper_study.{json,md} and the figures beside them are rewritten after every run.

    python bench/paper_study.py --quick                       # minutes: checks the machinery
    python bench/paper_study.py --parts open_search --threads 1            # issue 20.3: the open-set arch
    python bench/paper_study.py --parts ablation,open --variants r3 --threads 1   # does the search pay? (3 seeds)
    python bench/paper_study.py --parts f --threads 1                      # F1-F3 (hours)
    python bench/paper_study.py --threads 1                                # everything else (hours)
    python bench/paper_study.py --report-only                 # rewrite results from finished rows
Galleries are shared with the other benches (runs/bench): a gallery another process is training is
waited for, never trained twice at once. docs/nas.md, "Does the search pay?", has the order and costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import _shared
import gallery_aware as ga
import protocols as P
import stats
from runner import Run, Runner, command_line, digest, method_slug, split_method

from hetsearch.config import TrainRunConfig
from hetsearch.models import load_checkpoint
from hetsearch.nas.evaluator import CandidateEvaluator
from hetsearch.nas.plots import plot_search
from hetsearch.nas.rewards import RewardConfig, make_reward
from hetsearch.nas.sampling import PathSpace, draw_paths
from hetsearch.nas.runner import SearchRunConfig, run_search
from hetsearch.utils.device import resolve_device
from hetsearch.utils.results import markdown_table, write_results
from hetsearch.utils.typed_config import load_config

# the closed set's choice of the campaign's select phase (docs/compat.md, "The defaults"); the open-set
# supernet and search (open_search, done first) used label-free c+r, kept as the open set's method
BEST_METHOD = "bct+contrastive"
OPEN_METHOD = "contrastive+relational@train.task_loss=none"
PAPER_METHOD = "bct"
NO_COMPAT = "none"
VARIANTS = {"r3": ("r3", True), "r1": ("r1", True), "r2": ("r2", True), "nocompat": ("r3", False)}  # -> (reward, compat supernet)
RANDOM = "random"            # the variant without supernet or search: a path drawn at random under the budget
RANDOM_PATH = "random_path"  # its model name
RANDOM_DRAW_SEED = 100       # + the run's seed: draws apart from the F study's paths (seed 0)
CLOSED_VARIANTS = ("r3", "nocompat", "r1", "r2", RANDOM)
OPEN_VARIANTS = ("r3", "nocompat", RANDOM)
HAND_MODELS = ("shufflenetv2_x0_5", "mobilenetv3_small")
PARTS = ("open_search", "f", "ablation", "open", "f_wide")
QUICK = {"caps": ("data.max_train_items=2000", "data.max_test_items=400"), "gallery_epochs": 1, "supernet_epochs": 1,
         "epochs": 1, "seeds": "0,1", "paths": 6, "retrain_paths": 3, "retest_paths": 2, "wide_paths": 3,
         "paper_method": "",
         "search": ("search.population=6", "search.generations=2", "search.parents=3", "search.mutations=2",
                    "search.crossovers=2", "evaluator.calib_batches=2", "evaluator.val_items=200")}


@dataclass(frozen=True)
class Study:
    """What every run of a call shares beyond the query-model settings; the tags name what changes a run."""

    settings: P.Settings
    budget: float = 1.9                     # MFLOPs, the search budget (>= 30x below the paragon)
    supernet_epochs: int | None = None      # None: configs/fashion_mnist/supernet.yaml's
    paths: int = 30
    path_seed: int = 0
    search_overrides: tuple[str, ...] = ()  # search.* / evaluator.* overrides (quick runs)
    path_min_mflops: float | None = None    # set: paths drawn one per FLOPs bin of [this, budget] (stratified)
    wide_paths: int = 12                    # the f_wide part: this many paths stratified over
    wide_min_mflops: float = 0.9            # [wide_min_mflops, budget], every one retrained

    def search_tag(self) -> str:
        return _join(self.settings.tag(), "b" + digest([self.budget, list(self.search_overrides)], 6))

    def paths_tag(self) -> str:
        stratified = [] if self.path_min_mflops is None else [self.path_min_mflops]   # older tags unchanged
        return _join(self.settings.tag(), "p" + digest([self.budget, self.paths, self.path_seed,
                                                        list(self.search_overrides), *stratified], 6))

    def random_tag(self) -> str:
        return _join(self.settings.tag(), "r" + digest([self.budget, RANDOM_DRAW_SEED], 6))

    def wide(self) -> "Study":
        """The f_wide part's study: its paths spread over a wider FLOPs range under the same budget."""
        return dataclasses.replace(self, paths=self.wide_paths, path_min_mflops=self.wide_min_mflops)

    def of_paths_run(self, run: "Run") -> "Study":
        """The study whose sampled paths `run` (a path scoring or retrain) uses, by its tag."""
        return self.wide() if run.tag == self.wide().paths_tag() else self


def short_method(method: str) -> str:
    """"contrastive+relational@train.task_loss=none" -> "contrastive+relational (task_loss=none)"."""
    name, variant = split_method(method)
    return name + (f" ({', '.join(v.rsplit('.', 1)[-1] for v in variant)})" if variant else "")


def _join(*parts: str) -> str:
    return "_".join(p for p in parts if p)


# ----------------------------------------------------------------------------- the runs

def supernet_epochs(study: Study) -> int:
    return study.supernet_epochs or int(load_config(TrainRunConfig, _shared.CONFIGS / "supernet.yaml").train.epochs)


def supernet_run(study: Study, protocol: str, method: str, seed: int) -> Run:
    return Run(protocol, "supernet", method, seed, supernet_epochs(study), "select", study.settings.tag())


def search_run(study: Study, protocol: str, method: str, reward: str, seed: int) -> Run:
    """The search of the supernet (protocol, method, seed) with `reward` (epochs: the supernet's)."""
    return Run(protocol, f"search_{reward}", method, seed, supernet_epochs(study), "select", study.search_tag())


def paths_run(study: Study, method: str) -> Run:
    return Run("closed_set", "paths", method, 0, supernet_epochs(study), "select", study.paths_tag())


RETEST_SEED = 1   # the F study's paths are retrained with seed 0; a retest retrains some again with this one


def path_retrain_run(study: Study, index: int, method: str, epochs: int, seed: int = 0) -> Run:
    return Run("closed_set", f"path{index:02d}", method, seed, epochs, "select", study.paths_tag())


def searched_run(study: Study, protocol: str, variant: str, method: str, seed: int, epochs: int,
                 phase: str = "final") -> Run:
    """The retrain of a search's winner: final phase for the ablations (test), select phase for the F
    study (validation, beside the randomly drawn paths)."""
    return Run(protocol, f"cmpnas_{variant}", method, seed, epochs, phase, study.search_tag())


def random_path_run(study: Study, protocol: str, method: str, seed: int, epochs: int) -> Run:
    """A path drawn at random under the budget (seed RANDOM_DRAW_SEED + seed), retrained as a searched net."""
    return Run(protocol, RANDOM_PATH, method, seed, epochs, "final", study.random_tag())


def variant_run(study: Study, protocol: str, variant: str, method: str, seed: int, epochs: int) -> Run:
    """The final-phase retrain of an ablation variant: a search's winner, or the random path."""
    if variant == RANDOM:
        return random_path_run(study, protocol, method, seed, epochs)
    return searched_run(study, protocol, variant, method, seed, epochs)


def hand_run(study: Study, protocol: str, model: str, method: str, seed: int, epochs: int, phase: str) -> Run:
    return Run(protocol, model, method, seed, epochs, phase, P.run_tag(study.settings, protocol, model))


def variant_search(study: Study, run: Run) -> Run:
    """The search whose winner the retrain `run` (model cmpnas_<variant>) trains."""
    reward, compat = VARIANTS[run.model.split("_", 1)[1]]
    return search_run(study, run.protocol, run.method if compat else NO_COMPAT, reward, run.seed)


def run_folder(study: Study, run: Run) -> Path:
    """The output folder of a supernet or search run."""
    protocol = P.get_protocol(run.protocol)
    name = (f"{study.settings.prefix}_{run.protocol}{protocol.phase_tag(run.phase)}_{run.model}_"
            f"{method_slug(run.method)}_s{run.seed}_e{run.epochs}")
    return Path(study.settings.runs) / _join(name, run.tag)


# ----------------------------------------------------------------------------- configs

def supernet_config(study: Study, run: Run) -> TrainRunConfig:
    """configs/fashion_mnist/supernet.yaml on the protocol's select-phase data (open set: the training
    classes minus the validation classes) against the select-phase gallery, with the run's method."""
    settings, protocol = study.settings, P.get_protocol(run.protocol)
    compat_method, variant = split_method(run.method)
    cfg = load_config(TrainRunConfig, _shared.CONFIGS / "supernet.yaml", [
        *P.common_overrides(settings, protocol, "select"), f"name={run_folder(study, run).name}",
        f"train.epochs={run.epochs}", f"compat.method={compat_method}",
        f"compat.gallery_model={P.gallery_path(settings, protocol, 'select')}", f"runtime.seed={run.seed}",
        f"model.backbone_args.seed={run.seed}", "train.bn_recalibration_batches=0", *variant])
    cfg.model.backbone_args.setdefault("sample_embedding_dim", cfg.model.embedding_dim)
    return cfg


def search_config(study: Study, run: Run) -> SearchRunConfig:
    """configs/fashion_mnist/search.yaml on the supernet's data (select phase), scored against its gallery."""
    settings, protocol = study.settings, P.get_protocol(run.protocol)
    supernet = supernet_run(study, run.protocol, run.method, run.seed)
    reward = run.model.split("_", 1)[1] if run.model.startswith("search_") else "r3"
    return load_config(SearchRunConfig, _shared.CONFIGS / "search.yaml", [
        *P.common_overrides(settings, protocol, "select"), f"name={run_folder(study, run).name}",
        f"supernet={run_folder(study, supernet) / 'model.pt'}",
        f"gallery_model={P.gallery_path(settings, protocol, 'select')}", f"search.max_cost={study.budget}",
        f"search.seed={run.seed}", f"reward.name={reward}", *study.search_overrides])


def path_space(study: Study) -> PathSpace:
    """The closed set's supernets' search space and each path's whole-model cost."""
    return PathSpace.of_config(supernet_config(study, supernet_run(study, "closed_set", NO_COMPAT, 0)))


def sampled_paths(study: Study) -> list[str]:
    """--paths paths drawn as the search's random candidates are (uniform, narrowed to fit the budget);
    with study.path_min_mflops, one such draw per equal FLOPs bin of [path_min_mflops, budget] (uniform
    draws crowd just under the budget, where the paths retrain about alike)."""
    return [a.id for a in draw_paths(path_space(study), study.paths, max_mflops=study.budget,
                                     min_mflops=study.path_min_mflops, seed=study.path_seed)]


# ----------------------------------------------------------------------------- work (worker processes too)

def supernet_job(study: Study, run: Run) -> dict:
    path, info = P.train_model(supernet_config(study, run))
    return {**info, "model_path": str(path)}


def search_job(study: Study, run: Run) -> dict:
    cfg = search_config(study, run)
    if not Path(cfg.supernet).is_file():
        raise FileNotFoundError(f"{cfg.supernet}: the supernet is not trained (the study trains supernets first)")
    run_search(cfg, splits=P.splits_of(cfg), resume=True, log=lambda line: print(line, flush=True))
    best = json.loads((cfg.run_dir / "best.json").read_text())
    summary = json.loads((cfg.run_dir / "search_summary.json").read_text())
    return {"arch": best["arch"], "mflops": best["mflops"], "val_reward": best["reward"],
            "val_recall_at_1": best["hetero_recall_at_1"], "val_homo_recall_at_1": best["homo_recall_at_1"],
            "evaluations": best["evaluations"], "search_seconds": summary["total_seconds"],
            "search_dir": str(cfg.run_dir), "pareto_png": summary.get("pareto_png"), "supernet": cfg.supernet,
            "gallery_model_path": cfg.gallery_model, "reward": cfg.reward.name, "budget_mflops": study.budget}


def paths_job(study: Study, run: Run) -> dict:
    """Every sampled path scored in the supernet of (closed set, run.method, seed 0), as the search scores."""
    cfg = search_config(study, search_run(study, "closed_set", run.method, "r3", 0))
    splits = P.splits_of(cfg)
    supernet, gallery = load_checkpoint(cfg.supernet), load_checkpoint(cfg.gallery_model)
    evaluator = CandidateEvaluator(supernet.model, gallery.model, splits.train, splits.val, cfg.evaluator,
                                   resolve_device(cfg.runtime.device))
    space = supernet.model.backbone.space
    records = [evaluator(space.parse(arch)) for arch in sampled_paths(study)]
    return {"paths": records, "supernet": cfg.supernet, "supernet_model": supernet.meta.model_id,
            "gallery_model": gallery.meta.model_id, "budget_mflops": study.budget,
            "scored_on": f"validation: {len(evaluator.val)} items, each against the others; BN recalibrated on "
                         f"{len(evaluator.calib_batches)} training batches"}


def cmpnas_job(study: Study, run: Run, arch: str) -> dict:
    """The `cmpnas` query model of `arch` trained and scored as bench/protocols.py trains any query model."""
    settings = dataclasses.replace(study.settings, cmpnas_arch=((run.protocol, arch),))
    inner = dataclasses.replace(run, model="cmpnas", tag=P.run_tag(settings, run.protocol, "cmpnas"))
    return P.run_job(settings, inner)


def random_path_job(study: Study, run: Run) -> dict:
    arch = draw_paths(path_space(study), 1, max_mflops=study.budget, seed=RANDOM_DRAW_SEED + run.seed)[0]
    return {**cmpnas_job(study, run, arch.id), "draw_seed": RANDOM_DRAW_SEED + run.seed}


def path_retrain_job(study: Study, run: Run) -> dict:
    index = int(run.model[len("path"):])
    return {**cmpnas_job(study, run, sampled_paths(study)[index]), "path_index": index}


def rows_dir(study: Study) -> Path:
    return Path(study.settings.runs) / "ps_rows"


def searched_job(study: Study, run: Run) -> dict:
    """The search's winner (from its row: a fresh checkout restores rows, not every search folder) retrained."""
    search = variant_search(study, run)
    best = json.loads((rows_dir(study) / f"{search.key}.json").read_text())
    return {**cmpnas_job(study, run, best["arch"]), "variant": run.model.split("_", 1)[1], "search_run": search.key,
            "search_val_reward": best["val_reward"], "search_val_recall_at_1": best["val_recall_at_1"],
            "search_val_homo_recall_at_1": best["val_homo_recall_at_1"]}


def job(study: Study, run: Run) -> dict:
    """The runner's work function: one run of any kind, by its model field."""
    if run.model == "supernet":
        return supernet_job(study, run)
    if run.model.startswith("search_"):
        return search_job(study, run)
    if run.model == "paths":
        return paths_job(study.of_paths_run(run), run)
    if run.model.startswith("path"):
        return path_retrain_job(study.of_paths_run(run), run)
    if run.model.startswith("cmpnas_"):
        return searched_job(study, run)
    if run.model == RANDOM_PATH:
        return random_path_job(study, run)
    return P.run_job(study.settings, run)   # a gallery (method paragon) or a hand-designed query model


# ----------------------------------------------------------------------------- the parts

BUSY_S = 1800.0   # a gallery whose checkpoint changed this recently is being trained by another process


def wait_for_galleries(study: Study, protocols: list[str], poll_s: float = 60.0) -> None:
    """Wait while another process (the gallery-aware campaign shares runs/bench) trains a gallery this
    study needs: its checkpoint_last.pt changed within BUSY_S and it has no model.pt yet. A stale
    checkpoint (its trainer died) is resumed by this study."""
    folders = {P.gallery_path(study.settings, P.get_protocol(name), phase).parent
               for name in protocols for phase in ("select", "final")}
    while True:
        busy = [f for f in sorted(folders) if not (f / "model.pt").is_file() and (f / "checkpoint_last.pt").is_file()
                and time.time() - (f / "checkpoint_last.pt").stat().st_mtime < BUSY_S]
        if not busy:
            return
        print(f"[paper_study] waiting for another process to finish training {', '.join(map(str, busy))}", flush=True)
        time.sleep(poll_s)


def galleries(study: Study, runner: Runner, protocols: list[str]) -> None:
    wait_for_galleries(study, protocols)
    for batch in ga.gallery_batches(study.settings, protocols):  # each gallery trained once, by one process
        runner.run(batch)


def _trains_query_side(run: Run) -> bool:
    return run.model in ("supernet", RANDOM_PATH) or run.model in P.MODELS or run.model.startswith("cmpnas_") or (
        run.model.startswith("path") and run.model != "paths")


def build_banks(study: Study, runner: Runner, runs: list[Run]) -> None:
    """Build, in this process, each bank the unfinished runs will open: with --jobs > 1 two workers must
    not build one bank at once."""
    seen = set()
    for run in runs if runner.jobs > 1 else []:
        key = (run.protocol, P.get_protocol(run.protocol).phase_tag(run.phase), run.method)
        if _trains_query_side(run) and P.uses_bank(run.method) and runner.finished(run) is None and key not in seen:
            seen.add(key)
            probe = dataclasses.replace(run, model=P.MODELS[0], tag=study.settings.tag())
            print(f"[paper_study] bank {run.protocol} {run.phase}: {P.build_bank(study.settings, probe)}", flush=True)


def needs(study: Study, run: Run) -> list[Run]:
    """The runs `run` starts after: a search its supernet, a searched net's retrain its search, the F
    study's path scoring its supernet. Hand-designed nets and path retrains need only the galleries."""
    if run.model.startswith("search_"):
        return [supernet_run(study, run.protocol, run.method, run.seed)]
    if run.model.startswith("cmpnas_"):
        return [variant_search(study, run)]
    if run.model == "paths":
        return [supernet_run(study, "closed_set", run.method, 0)]
    return []


def open_search_plan(args, study: Study) -> list[Run]:
    return [supernet_run(study, "open_set", args.open_method, 0), search_run(study, "open_set", args.open_method, "r3", 0)]


def supernet_methods(methods: list[str]) -> list[str]:
    return list(dict.fromkeys([*methods, NO_COMPAT]))


def f_retrain_runs(args, study: Study) -> list[Run]:
    return ([path_retrain_run(study, i, m, args.path_epochs) for m in args.f_methods for i in range(args.retrain_paths)]
            + [hand_run(study, "closed_set", h, m, 0, args.path_epochs, "select") for m in args.f_methods
               for h in HAND_MODELS]
            + [path_retrain_run(study, i, m, args.path_epochs, RETEST_SEED) for m in args.f_methods
               for i in range(args.retest_paths)]
            + [searched_run(study, "closed_set", "r3", m, s, args.path_epochs, "select") for m in args.f_methods
               for s in args.seeds])


def f_plan(args, study: Study) -> list[Run]:
    methods = supernet_methods(args.f_methods)
    return ([supernet_run(study, "closed_set", m, 0) for m in methods] + [paths_run(study, m) for m in methods]
            + f_retrain_runs(args, study))


def wide_args(args) -> argparse.Namespace:
    """The F study's settings for the f_wide part: every path retrained once, no retest, no winners."""
    return argparse.Namespace(**{**vars(args), "retrain_paths": args.wide_paths, "retest_paths": 0, "seeds": []})


def f_wide_plan(args, study: Study) -> list[Run]:
    """F2/F3 where the paths differ: --wide-paths paths stratified over [--wide-min-mflops, budget], scored in
    the F study's two supernets and each retrained (seed 0); the seed noise is the F study's retest."""
    wide, methods = study.wide(), supernet_methods(args.f_methods)
    return ([supernet_run(study, "closed_set", m, 0) for m in methods] + [paths_run(wide, m) for m in methods]
            + [path_retrain_run(wide, i, m, args.path_epochs) for m in args.f_methods for i in range(wide.paths)])


def ablation_runs(args, study: Study, protocol: str, seed: int,
                  only: list[str] | None = None) -> tuple[list[Run], list[Run], list[Run]]:
    """(supernets, searches, retrains) of one seed: R3 and the hand-designed net first (the search pays?),
    then the ablations; `only`: these variants (--variants)."""
    methods, variants = ((args.methods, CLOSED_VARIANTS) if protocol == "closed_set"
                         else (args.open_methods, OPEN_VARIANTS))
    if only is not None:
        variants = [v for v in variants if v in only]
    retrains = ([searched_run(study, protocol, "r3", m, seed, args.epochs) for m in methods if "r3" in variants]
                + [hand_run(study, protocol, HAND_MODELS[0], m, seed, args.epochs, "final") for m in methods]
                + [variant_run(study, protocol, v, m, seed, args.epochs) for m in methods for v in variants if v != "r3"])
    searches = list(dict.fromkeys(variant_search(study, r) for r in retrains if r.model.startswith("cmpnas_")))
    supernets = list(dict.fromkeys(supernet_run(study, protocol, s.method, seed) for s in searches))
    return supernets, searches, retrains


def ablation_plan(args, study: Study, protocol: str = "closed_set") -> list[Run]:
    """Every seed of R3 and the hand-designed net first (does the search pay?), then every seed of the
    other variants; within each, seeds in order (a call cut short has the first seeds)."""
    first = [v for v in ("r3",) if args.variants is None or v in args.variants]
    runs = []
    for only in (first, args.variants):
        for seed in args.seeds:
            supernets, searches, retrains = ablation_runs(args, study, protocol, seed, only)
            runs += [*supernets, *searches, *retrains]
    return list(dict.fromkeys(runs))


PART_PLANS = {"open_search": open_search_plan, "f": f_plan, "ablation": ablation_plan,
              "open": functools.partial(ablation_plan, protocol="open_set"), "f_wide": f_wide_plan}
PART_PROTOCOLS = {"open_search": "open_set", "f": "closed_set", "ablation": "closed_set", "open": "open_set",
                  "f_wide": "closed_set"}


def reopen_lost_supernets(study: Study, runner: Runner, runs: list[Run]) -> None:
    """A finished supernet whose model.pt is gone (a fresh checkout restores rows; supernets trained
    before bench/state kept them) is trained again when an unfinished run needs it; its old row stays
    beside the new one as <key>.json.lost."""
    needed = {need for run in runs if runner.finished(run) is None for need in needs(study, run)}
    for run in sorted(needed, key=lambda r: r.key):
        row = runner.finished(run)
        if run.model == "supernet" and row is not None and not Path(row["model_path"]).is_file():
            path = runner.row_path(run)
            path.rename(path.with_name(path.name + ".lost"))
            print(f"[paper_study] {row['model_path']} is gone: training {run.key} again (old row: {path.name}.lost)",
                  flush=True)


def run_parts(args, study: Study, runner: Runner) -> None:
    """Every run of the parts, one scheduled call: a run starts when what it needs has finished, the
    parts' order (then each part's) is the priority, so --jobs stay busy across parts and stages."""
    galleries(study, runner, list(dict.fromkeys(PART_PROTOCOLS[part] for part in args.parts)))
    runs = list(dict.fromkeys(run for part in args.parts for run in PART_PLANS[part](args, study)))
    reopen_lost_supernets(study, runner, runs)
    build_banks(study, runner, runs)
    runner.run(runs, needs=functools.partial(needs, study))


# ----------------------------------------------------------------------------- analysis

def _tau(pairs: list[tuple[float, float]], seed: int = 0) -> dict:
    if len(pairs) < 2:
        return {"tau": None, "lo": None, "hi": None, "n": len(pairs)}
    x, y = zip(*pairs)
    return stats.tau_ci(x, y, seed=seed)


def r3_alpha() -> float:
    return float(load_config(SearchRunConfig, _shared.CONFIGS / "search.yaml").reward.alpha)


def path_table(args, study: Study, rows: dict, method: str, supernets: dict[str, list[dict]]) -> list[dict]:
    """One entry per sampled path: its supernet scores (per supernet method slug) and, once retrained
    with `method`, its retrained validation scores."""
    r3 = make_reward(RewardConfig(name="r3", alpha=r3_alpha()))
    table = []
    for i in range(study.paths):
        entry: dict = {"index": i}
        for m, records in supernets.items():
            if i < len(records):
                rec, slug = records[i], method_slug(m)
                entry.update(arch=rec["arch"], mflops=rec["mflops"])
                entry.update({f"{slug}_homo": rec["homo_recall_at_1"], f"{slug}_hetero": rec["hetero_recall_at_1"],
                              f"{slug}_r3": r3(rec)})
        row = rows.get(path_retrain_run(study, i, method, args.path_epochs).key) if i < args.retrain_paths else None
        if row is not None:
            entry.update(arch=row["arch"], retrained_hetero=row["val_recall_at_1"],
                         retrained_homo=row["val_homo_recall_at_1"], retrained_mflops=row["query_mflops"])
        retest = (rows.get(path_retrain_run(study, i, method, args.path_epochs, RETEST_SEED).key)
                  if i < args.retest_paths else None)
        if row is not None and retest is not None:
            entry.update(retest_hetero=retest["val_recall_at_1"])
        if "arch" in entry:
            table.append(entry)
    return table


def f_study(args, study: Study, rows: dict) -> dict:
    """F1-F3 per compat method of the F study: the path table, τ (with intervals) between every supernet
    score and the retrained scores, the paired F3 difference, F1's τ, the hand-designed nets."""
    supernets = {m: rows[paths_run(study, m).key]["paths"] for m in supernet_methods(args.f_methods)
                 if paths_run(study, m).key in rows}
    out = {"supernets": {m: paths_run(study, m).key for m in supernets}, "methods": {}}
    for method in args.f_methods:
        table = path_table(args, study, rows, method, supernets)
        done = [e for e in table if "retrained_hetero" in e]
        taus = [{"supernet_method": m, "compat": m != NO_COMPAT, "supernet_score": s, "retrained_score": r,
                 **_tau([(e[f"{method_slug(m)}_{s}"], e[f"retrained_{r}"]) for e in done
                         if f"{method_slug(m)}_{s}" in e])}
                for m in supernets for s in ("homo", "hetero", "r3") for r in ("hetero", "homo")]
        both = [e for e in done if f"{method_slug(method)}_hetero" in e and f"{NO_COMPAT}_homo" in e]
        f3_diff = stats.tau_difference_ci([e[f"{method_slug(method)}_hetero"] for e in both],
                                          [e[f"{NO_COMPAT}_homo"] for e in both],
                                          [e["retrained_hetero"] for e in both]) if len(both) >= 2 else {"diff": None}
        hand = [rows.get(hand_run(study, "closed_set", h, method, 0, args.path_epochs, "select").key) for h in HAND_MODELS]
        searched = [r for r in (rows.get(searched_run(study, "closed_set", "r3", method, s, args.path_epochs,
                                                      "select").key) for s in args.seeds) if r]
        out["methods"][method] = {
            "retrained": len(done), "planned": args.retrain_paths, "epochs": args.path_epochs, "paths": table,
            "taus": taus, "f3_difference": f3_diff, "retest": retest_noise(done, args.retest_paths),
            "f1": {"flops": _tau([(e["retrained_mflops"], e["retrained_hetero"]) for e in done]),
                   "homo": _tau([(e["retrained_homo"], e["retrained_hetero"]) for e in done])},
            "hand": [{"model": r["model"], "mflops": r["query_mflops"], "val_recall_at_1": r["val_recall_at_1"],
                      "val_homo_recall_at_1": r["val_homo_recall_at_1"], "run": r["run"]} for r in hand if r],
            "searched": [{"seed": r["seed"], "arch": r["arch"], "mflops": r["query_mflops"],
                          "val_recall_at_1": r["val_recall_at_1"], "val_homo_recall_at_1": r["val_homo_recall_at_1"],
                          "run": r["run"]} for r in searched],
            "search_vs_random": stats.compare_means([r["val_recall_at_1"] for r in searched],
                                                    [e["retrained_hetero"] for e in done])}
    return out


def retest_noise(done: list[dict], planned: int) -> dict:
    """How far one retrain ranks the paths at all: τ between two seeds' retrained M(q, g) of the same
    paths (a ceiling for any supernet's τ), and the seed std of one path's score (pooled over the
    retested paths) beside the std between paths (seed 0)."""
    pairs = [(e["retrained_hetero"], e["retest_hetero"]) for e in done if "retest_hetero" in e]
    # the seeds' common offset moves every path alike and no ranking: only the spread of the differences counts
    diff_std = stats.mean_std([a - b for a, b in pairs])["std"]
    seed_std = diff_std / math.sqrt(2) if diff_std is not None else None
    path_std = stats.mean_std([e["retrained_hetero"] for e in done])["std"]
    mean_of = {}
    if seed_std is not None and path_std:
        # the same paths scored by the mean of k retrains each: the seed variance shrinks k-fold
        own = max(0.0, path_std ** 2 - seed_std ** 2)
        mean_of = {f"tau_ceiling_mean_of_{k}": _tau_ceiling(seed_std / math.sqrt(k), math.sqrt(own + seed_std ** 2 / k))
                   for k in (2, 3)}
    return {**_tau(pairs), "planned": planned, "seed_std": seed_std, "path_std": path_std,
            "tau_ceiling": _tau_ceiling(seed_std, path_std), **mean_of}


def _tau_ceiling(seed_std: float | None, path_std: float | None) -> float | None:
    """The τ a perfect ranking of the paths would show against single retrains (normal scores): the share
    of the between-path variance that is the paths' own is sin²(τ·π/2)."""
    if seed_std is None or not path_std:
        return None
    share = max(0.0, 1 - seed_std ** 2 / path_std ** 2)
    return 2 / math.pi * math.asin(math.sqrt(share))


def borrowed_noise(done: list[dict], retest: dict) -> dict:
    """The f_wide paths' retrain noise: one retrain's seed std as the F study's retest measured it (same
    recipe), against the spread between these paths."""
    path_std = stats.mean_std([e["retrained_hetero"] for e in done])["std"]
    return {"tau": None, "lo": None, "hi": None, "n": retest.get("n") or 0, "planned": 0,
            "seed_std": retest.get("seed_std"), "path_std": path_std, "seed_std_from": "the F study's retest",
            "tau_ceiling": _tau_ceiling(retest.get("seed_std"), path_std)}


def f_wide_study(args, study: Study, rows: dict, f: dict) -> dict:
    """The F study's analysis of the f_wide paths, its noise borrowed from the F study's retest, and how
    much better than FLOPs alone the compat supernet's M(a, g) ranks them (paired Δτ)."""
    out = f_study(wide_args(args), study.wide(), rows)
    for method, fm in out["methods"].items():
        done = [e for e in fm["paths"] if "retrained_hetero" in e and f"{method_slug(method)}_hetero" in e]
        fm["retest"] = borrowed_noise(done, f["methods"][method]["retest"])
        fm["flops_range"] = [min((e["mflops"] for e in fm["paths"]), default=None),
                             max((e["mflops"] for e in fm["paths"]), default=None)]
        fm["over_flops"] = (stats.tau_difference_ci([e[f"{method_slug(method)}_hetero"] for e in done],
                                                    [e["retrained_mflops"] for e in done],
                                                    [e["retrained_hetero"] for e in done])
                            if len(done) >= 2 else {"diff": None})
    return out


def _fmt_retest(r: dict) -> str:
    if r.get("seed_std_from"):
        if r.get("tau_ceiling") is None:
            return f"seed noise from {r['seed_std_from']}; the spread between these paths pending"
        return (f"seed std {100 * r['seed_std']:.2f} points ({r['seed_std_from']}, n = {r['n']}) vs "
                f"{100 * r['path_std']:.2f} between these paths, a perfect ranking's τ {r['tau_ceiling']:.2f}")
    if not r.get("n"):
        return f"retrain retest pending (0 of {r.get('planned', 0)} paths)"
    stds = (f", seed std {100 * r['seed_std']:.2f} points vs {100 * r['path_std']:.2f} between paths, "
            f"a perfect ranking's τ {r['tau_ceiling']:.2f}" if r.get("tau_ceiling") is not None else "")
    if r.get("tau_ceiling_mean_of_3") is not None:
        stds += f" ({r['tau_ceiling_mean_of_3']:.2f} against the mean of 3 retrains per path)"
    return f"seed-to-seed retrain {_fmt_tau(r)}{stds}"


def find_tau(f_method: dict, supernet_method: str, supernet_score: str, retrained_score: str) -> dict:
    return next((t for t in f_method["taus"] if t["supernet_method"] == supernet_method
                 and t["supernet_score"] == supernet_score and t["retrained_score"] == retrained_score),
                {"tau": None, "lo": None, "hi": None, "n": 0})


COMPARISONS = (("cmpnas_r3", "cmpnas_r1", "R3 beats R1 (homogeneous-only reward)"),
               ("cmpnas_r3", "cmpnas_r2", "R3 beats R2 (heterogeneous-only reward)"),
               ("cmpnas_r3", "cmpnas_nocompat", "the compat-trained supernet beats the no-compat supernet (R3 both)"),
               ("cmpnas_r3", HAND_MODELS[0], "the searched net beats ShuffleNetV2 x0.5 (the search pays)"),
               ("cmpnas_r3", RANDOM_PATH, "the searched net beats a path drawn at random under the budget, "
                                          "trained alike (the search pays, not only its space)"),
               (RANDOM_PATH, HAND_MODELS[0], "a path drawn at random under the budget beats ShuffleNetV2 x0.5 "
                                             "(the space pays)"))


def ablation_groups(args, study: Study, rows: dict, protocol: str, method: str) -> dict[str, list[dict]]:
    variants = CLOSED_VARIANTS if protocol == "closed_set" else OPEN_VARIANTS
    groups = {variant_run(study, protocol, v, method, 0, args.epochs).model:
              [rows.get(variant_run(study, protocol, v, method, s, args.epochs).key) for s in args.seeds]
              for v in variants}
    groups[HAND_MODELS[0]] = [rows.get(hand_run(study, protocol, HAND_MODELS[0], method, s, args.epochs,
                                                "final").key) for s in args.seeds]
    return {k: [r for r in rs if r is not None] for k, rs in groups.items()}


def ablation(args, study: Study, rows: dict) -> dict:
    """Mean and std over seeds (test M(q, g) and M(q, q)) per (protocol, method, model), and the comparisons."""
    summary, comparisons = [], []
    for protocol, methods in (("closed_set", args.methods), ("open_set", args.open_methods)):
        for method in methods:
            groups = ablation_groups(args, study, rows, protocol, method)
            for model, rs in groups.items():
                if rs:
                    het, homo = stats.mean_std([r["recall_at_1"] for r in rs]), stats.mean_std([r["homo_recall_at_1"] for r in rs])
                    summary.append({"protocol": protocol, "method": method, "model": model, "seeds": [r["seed"] for r in rs],
                                    "recall_at_1_mean": het["mean"], "recall_at_1_std": het["std"],
                                    "homo_recall_at_1_mean": homo["mean"], "homo_recall_at_1_std": homo["std"],
                                    "map_at_r_mean": stats.mean_std([r["map_at_r"] for r in rs])["mean"],
                                    "query_mflops_mean": stats.mean_std([r["query_mflops"] for r in rs])["mean"],
                                    "archs": [r.get("arch") for r in rs]})
            for a, b, claim in COMPARISONS:
                if a in groups and b in groups:
                    comparisons.append({"protocol": protocol, "method": method, "a": a, "b": b, "claim": claim,
                                        **stats.compare_means([r["recall_at_1"] for r in groups[a]],
                                                              [r["recall_at_1"] for r in groups[b]])})
    return {"summary": summary, "comparisons": comparisons}


# ----------------------------------------------------------------------------- findings

def _fmt_tau(t: dict) -> str:
    if t.get("tau") is None:
        return f"τ n/a (n = {t.get('n', 0)})"
    interval = f" [{t['lo']:.2f}, {t['hi']:.2f}]" if t.get("lo") is not None else ""
    return f"τ = {t['tau']:.2f}{interval} (n = {t['n']})"


def _pending(args, f_method: dict) -> str | None:
    if args.quick:
        return "unresolved: quick run (tiny caps), not evidence"
    if f_method["retrained"] < f_method["planned"]:
        return f"unresolved: runs pending ({f_method['retrained']} of {f_method['planned']} paths retrained)"
    return None


STRONG_TAU = 0.5   # τ-b of 0.5: three of four path pairs ordered alike, a ranking worth searching with


def _weak_association(args, f_method: dict, t: dict) -> str:
    """F1/F2 claim no useful association. Held when the interval excludes a strong one (hi < STRONG_TAU);
    not held when it excludes none (lo > 0); unresolved when it admits both."""
    pending = _pending(args, f_method)
    if pending or t.get("lo") is None:
        return pending or "unresolved: no interval"
    if t["lo"] > 0:
        return "not held"
    if t["hi"] < STRONG_TAU:
        return "held"
    return f"unresolved: the interval admits both no association and τ >= {STRONG_TAU}"


def _noise_bound(fm: dict) -> str | None:
    """When one retrain's seed noise is as large as the spread between paths (>= 3 paths retested), no
    score can rank single retrains: F2 and F3 are then untestable, whatever τ says."""
    r = fm["retest"]
    if (r.get("n") or 0) < 3 or r.get("tau_ceiling") is None or r["tau_ceiling"] >= STRONG_TAU:
        return None
    return (f"unresolved: one retrain's seed noise (std {100 * r['seed_std']:.2f} points) is most of the spread "
            f"between paths ({100 * r['path_std']:.2f}): even a perfect ranking would reach τ = "
            f"{r['tau_ceiling']:.2f} < {STRONG_TAU} against single retrains")


def f_findings(args, f: dict) -> list[dict]:
    out = []
    for method, fm in f["methods"].items():
        compat_het = find_tau(fm, method, "hetero", "hetero")
        f2 = find_tau(fm, NO_COMPAT, "homo", "hetero")
        d = fm["f3_difference"]
        if _pending(args, fm) or compat_het.get("lo") is None or d.get("lo") is None:
            f3 = _pending(args, fm) or "unresolved: no interval"
        elif compat_het["lo"] > 0 and d["lo"] > 0:
            f3 = "held"
        elif compat_het["lo"] <= 0:
            f3 = "not held"
        else:
            f3 = "unresolved: the compat supernet ranks, but not detectably better than the no-compat one"
        noise = None if _pending(args, fm) else _noise_bound(fm)
        f3 = noise or f3
        diff = (f"Δτ = {d['diff']:.2f} [{d['lo']:.2f}, {d['hi']:.2f}]" if d.get("lo") is not None else "Δτ n/a")
        out += [
            {"id": "F1a", "method": method, "claim": "retrained heterogeneous accuracy does not follow FLOPs",
             "verdict": _weak_association(args, fm, fm["f1"]["flops"]), "numbers": _fmt_tau(fm["f1"]["flops"]),
             "rule": f"held when the 95% bootstrap interval of τ(MFLOPs, retrained M(q,g)) lies below {STRONG_TAU}; "
                     "not held when it lies above 0"},
            {"id": "F1b", "method": method, "claim": "retrained heterogeneous accuracy does not follow homogeneous accuracy",
             "verdict": _weak_association(args, fm, fm["f1"]["homo"]), "numbers": _fmt_tau(fm["f1"]["homo"]),
             "rule": f"held when the interval of τ(retrained M(q,q), retrained M(q,g)) lies below {STRONG_TAU}; "
                     "not held when it lies above 0"},
            {"id": "F2", "method": method, "claim": "without compatibility training, a supernet path's homogeneous "
                                                    "accuracy predicts its retrained heterogeneous accuracy poorly",
             "verdict": noise or _weak_association(args, fm, f2), "numbers": f"{_fmt_tau(f2)}; {_fmt_retest(fm['retest'])}",
             "rule": f"held when the interval of τ(no-compat supernet M(a,a), retrained M(q,g)) lies below {STRONG_TAU}; "
                     "not held when it lies above 0"},
            {"id": "F3", "method": method, "claim": "with compatibility training, the supernet's ranking predicts "
                                                    "retrained heterogeneous accuracy (better than F2's ranking)",
             "verdict": f3, "numbers": f"{_fmt_tau(compat_het)}; vs F2's ranking {diff}; {_fmt_retest(fm['retest'])}",
             "rule": "held when the interval of τ(compat supernet M(a,g), retrained M(q,g)) is above 0 and so is "
                     "the paired bootstrap interval of its difference to F2's τ; not held when the first reaches 0; "
                     f"F2 and F3 unresolved when the retest says a perfect ranking would reach τ < {STRONG_TAU}"},
            _search_vs_random(args, method, fm)]
    return out


COMPARE_VERDICTS = {"a higher": "held", "a lower": "not held (reversed)", "within noise": "not held (within noise)"}


def _search_vs_random(args, method: str, fm: dict) -> dict:
    """F4: do the searches' winners beat the randomly drawn paths of the same budget, trained alike?"""
    c = fm["search_vs_random"]
    verdict = _pending(args, fm) or COMPARE_VERDICTS.get(c["verdict"], c["verdict"])
    searched = stats.mean_std([r["val_recall_at_1"] for r in fm["searched"]])
    random_paths = stats.mean_std([e["retrained_hetero"] for e in fm["paths"] if "retrained_hetero" in e])
    numbers = (f"searched {searched['mean']:.4f} (n = {searched['n']}) vs random paths {random_paths['mean']:.4f} "
               f"± {random_paths['std'] or 0:.4f} (n = {random_paths['n']})" if searched["n"] and random_paths["n"]
               else f"searched n = {searched['n']}, random paths n = {random_paths['n']}")
    if c.get("se"):
        numbers += f": Δ {100 * c['diff']:+.2f} ± {100 * c['se']:.2f} points (1 SE)"
    return {"id": "F4", "method": method, "claim": "the search's winner beats paths drawn at random under the same "
                                                  "budget and trained alike (the search pays, not only its space)",
            "verdict": verdict, "numbers": numbers,
            "rule": "held when the searches' winners (one per seed, retrained as the paths are) score a mean "
                    "validation M(q,g) above the random paths' by more than 2 standard errors (Welch), >= 3 each"}


def wide_findings(args, fw: dict) -> list[dict]:
    """F1-F3 again on the f_wide paths (F4 needs the budget's draws), and F5: does the compat supernet rank
    them better than their FLOPs do?"""
    out = []
    for method, fm in fw["methods"].items():
        lo, hi = fm["flops_range"]
        where = f" (paths spread over {lo:.2f}-{hi:.2f} MFLOPs)" if lo is not None else ""
        out += [{**f, "id": f"{f['id']}-wide", "claim": f["claim"] + where}
                for f in f_findings(wide_args(args), {"methods": {method: fm}}) if f["id"] != "F4"]
        d, pending = fm["over_flops"], _pending(wide_args(args), fm)
        if pending or d.get("lo") is None:
            verdict = pending or "unresolved: no interval"
        else:
            verdict = "held" if d["lo"] > 0 else "not held (reversed)" if d["hi"] < 0 else "not held (within noise)"
            verdict = (_noise_bound(fm) or verdict) if verdict != "held" else verdict
        numbers = (f"τ(compat supernet M(a,g)) − τ(MFLOPs) = {d['diff']:.2f} [{d['lo']:.2f}, {d['hi']:.2f}] (n = {d['n']}); "
                   f"τ(MFLOPs) alone {_fmt_tau(fm['f1']['flops'])}" if d.get("lo") is not None else "Δτ n/a")
        out.append({"id": "F5-wide", "method": method, "claim": "the compat supernet ranks retrained nets better than "
                                                                "their FLOPs do (it beats 'the largest path under the "
                                                                "budget')" + where,
                    "verdict": verdict, "numbers": numbers,
                    "rule": "held when the paired bootstrap interval of τ(compat supernet M(a,g), retrained M(q,g)) − "
                            "τ(MFLOPs, retrained M(q,g)) lies above 0"})
    return out


def ablation_findings(args, abl: dict) -> list[dict]:
    out = []
    for c in abl["comparisons"]:
        verdict = COMPARE_VERDICTS.get(c["verdict"], c["verdict"])
        if args.quick:
            verdict = "unresolved: quick run (tiny caps), not evidence"
        elif len(args.seeds) < 3 and not verdict.startswith("unresolved"):
            verdict = f"unresolved: {len(args.seeds)} seeds"
        numbers = (f"Δ test M(q,g) = {100 * c['diff']:+.2f} points" + (f" ± {100 * c['se']:.2f} (1 SE)" if c.get("se") else "")
                   + f", seeds {c['n']}") if c.get("diff") is not None else f"seeds {c['n']}"
        out.append({"id": f"{c['protocol']}: {c['a']} vs {c['b']}", "method": c["method"], "claim": c["claim"],
                    "verdict": verdict, "numbers": numbers,
                    "rule": "held when the mean over seeds is higher by more than 2 standard errors (Welch), "
                            ">= 3 seeds each"})
    return out


# ----------------------------------------------------------------------------- figures

def _save(fig, path: Path) -> None:
    import io

    from hetsearch.utils.io import atomic_write_bytes

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def draw_rank(fm: dict, method: str, supernets: list[str], path: Path) -> None:
    """F2/F3: supernet score (rows: supernet; columns: homogeneous, heterogeneous) vs retrained M(q, g)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = [e for e in fm["paths"] if "retrained_hetero" in e]
    fig = Figure(figsize=(10, 4.2 * len(supernets)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(supernets), 2, squeeze=False)
    for row, m in enumerate(supernets):
        for col, score in enumerate(("homo", "hetero")):
            ax, key = axes[row][col], f"{method_slug(m)}_{score}"
            pts = [(e[key], e["retrained_hetero"], e["mflops"]) for e in done if key in e]
            if pts:
                sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts], cmap="plasma", s=30)
                fig.colorbar(sc, ax=ax, label="MFLOPs")
            side = "M(a, a)" if score == "homo" else "M(a, g)"
            ax.set(xlabel=f"supernet {side} (inherited weights, validation)",
                   ylabel=f"retrained M(q, g) ({fm['epochs']} epochs, validation)",
                   title=f"{'no-compat' if m == NO_COMPAT else short_method(m)} supernet: "
                         f"{_fmt_tau(find_tau(fm, m, score, 'hetero'))}")
            ax.title.set_fontsize(8)
            ax.grid(alpha=0.3)
    fig.suptitle(f"Does the supernet rank retrained nets? Paths retrained with {short_method(method)}", fontsize=10)
    _save(fig, path)


def _bar_colour(model: str) -> str:
    """R3 orange, the other searches blue, the random path green, hand-designed nets grey."""
    if model == RANDOM_PATH:
        return "tab:green"
    return "tab:orange" if model.startswith("cmpnas_r3") else "tab:blue" if model.startswith("cmpnas_") else "tab:gray"


def draw_ablation(abl: dict, path: Path) -> None:
    """Mean test M(q, g) ± std over seeds, one bar per (method, model), one panel per protocol; seeds as dots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    protocols = list(dict.fromkeys(s["protocol"] for s in abl["summary"]))
    fig = Figure(figsize=(6 * max(1, len(protocols)), 6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(protocols)), squeeze=False)[0]
    for ax, protocol in zip(axes, protocols):
        rows = [s for s in abl["summary"] if s["protocol"] == protocol]
        labels = [f"{s['model'].replace('cmpnas_', 'searched, ')}\n{short_method(s['method'])}" for s in rows]
        means = [s["recall_at_1_mean"] for s in rows]
        ax.bar(range(len(rows)), means, yerr=[s["recall_at_1_std"] or 0 for s in rows], capsize=4,
               color=[_bar_colour(s["model"]) for s in rows])
        ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
        lo = min(means) if means else 0
        ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max(means, default=1) + 0.03))
        ax.set(ylabel="test M(q, g) Recall@1 (mean ± std, seeds)", title=protocol)
        ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def figure_entry(file: Path, what: str, runs: list[dict]) -> dict:
    return {"file": file.name, "what": what, "runs": [r["run"] for r in runs],
            "seeds": sorted({r["seed"] for r in runs}), "commands": sorted({r["command"] for r in runs}),
            "git_revisions": sorted({r["git_revision"] for r in runs}), "drawn_by": command_line()}


def _pareto_figure(args, study: Study, rows: dict, protocol: str, marks: list[dict], suffix: str) -> list[dict]:
    """The first seed's R3 search whose evaluated paths are on this machine (bench/state.py keeps them;
    searches from before it did are not), else the figure drawn before stays, with its entry."""
    method = args.method if protocol == "closed_set" else args.open_method
    searches = [r for r in (rows.get(search_run(study, protocol, method, "r3", seed).key) for seed in args.seeds) if r]
    out = Path(args.results_dir) / f"{args.results}_pareto{suffix}.png"
    row = next((r for r in searches if Path(r["search_dir"], "evaluated.jsonl").is_file()), None)
    if row is None:
        return previous_figures(args, out.name) if searches else []
    plot_search(row["search_dir"], out, marks=marks, title=f"{protocol}, R3 search of the {short_method(method)} supernet "
                f"(seed {row['seed']}, budget {study.budget:g} MFLOPs): supernet scores on validation; marks retrained")
    return [figure_entry(out, f"Pareto front of the {protocol} search: every evaluated path's MFLOPs, M(a, g), "
                              "M(a, a) with inherited weights; searched net and retrained hand-designed nets marked",
                         [row])]


def previous_figures(args, name: str) -> list[dict]:
    """The entry of figure `name` in the results the last call wrote, when that figure file exists."""
    if not (Path(args.results_dir) / name).is_file():
        return []
    return [e for e in _previous_figures(args) if e.get("file") == name]


def _rank_figures(args, study: Study, rows: dict, f: dict, name: str, what: str) -> list[dict]:
    out = []
    for method, fm in f["methods"].items():
        if fm["retrained"]:
            path = Path(args.results_dir) / f"{args.results}_{name}_{method_slug(method)}.png"
            draw_rank(fm, method, list(f["supernets"]), path)
            runs = [rows[k] for k in f["supernets"].values()] + [rows[path_retrain_run(study, e["index"], method,
                                                                  args.path_epochs).key] for e in fm["paths"]
                                                                 if "retrained_hetero" in e]
            out.append(figure_entry(path, f"{what} ({method})", runs))
    return out


def figures(args, study: Study, rows: dict, f: dict, abl: dict, fw: dict) -> list[dict]:
    out = []
    fm = f["methods"].get(args.method)
    hand_runs = [rows[h["run"]] for h in (fm or {}).get("hand", [])]
    marks = [{"label": f"{r['model']} retrained, {r['epochs']} ep (val)", "mflops": r["query_mflops"],
              "hetero_recall_at_1": r["val_recall_at_1"], "homo_recall_at_1": r["val_homo_recall_at_1"]}
             for r in hand_runs]
    out += _pareto_figure(args, study, rows, "closed_set", marks, "")
    out += _pareto_figure(args, study, rows, "open_set", [], "_open_set")
    out += _rank_figures(args, study, rows, f, "rank", "F2/F3: supernet scores vs retrained M(q, g) of the sampled "
                                                       "paths")
    out += _rank_figures(args, study.wide(), rows, fw, "rank_wide", "F2/F3 where the paths differ: supernet scores vs "
                         f"retrained M(q, g) of paths spread over {study.wide_min_mflops:g}-{study.budget:g} MFLOPs")
    if abl["summary"]:
        path = Path(args.results_dir) / f"{args.results}_ablation.png"
        draw_ablation(abl, path)
        runs = [r for r in rows.values() if r.get("phase") == "final" and r.get("method") != "paragon"]
        out.append(figure_entry(path, "reward and supernet ablations and the hand-designed net: test M(q, g), "
                                      "mean ± std over seeds", runs))
    return out


# ----------------------------------------------------------------------------- results

def declared_runs(args, study: Study) -> list[Run]:
    """Every run of this call's settings in every part (whether or not this call runs it)."""
    runs = [r for batch in ga.gallery_batches(study.settings, ["closed_set", "open_set"]) for r in batch]
    every = argparse.Namespace(**{**vars(args), "variants": None})
    runs += [r for part in PARTS for r in PART_PLANS[part](every, study)]
    return list(dict.fromkeys(runs))


DRAW_EVERY_S = 120.0   # figures redrawn after a run at most this often (and always at the end of a call)
_LAST_DRAW = [-DRAW_EVERY_S]


def _previous_figures(args) -> list[dict]:
    path = Path(args.results_dir) / f"{args.results}.json"
    return json.loads(path.read_text()).get("figures", []) if path.is_file() else []


def report(args, study: Study, runner: Runner, started: float, *, draw: bool = False) -> Path:
    """Rewrite docs/results/<results>.{json,md} from the finished rows of this call's settings, and the
    figures when `draw` or DRAW_EVERY_S have passed since they were last drawn."""
    if getattr(args, "declared_keys", None) is None:  # once per call (it reads configs)
        args.declared_keys = {r.key for r in declared_runs(args, study)}
    keys = args.declared_keys
    rows = {r["run"]: r for r in runner.rows() if r["run"] in keys}
    f, abl = f_study(args, study, rows), ablation(args, study, rows)
    fw = f_wide_study(args, study, rows, f)
    finals = sorted((r for r in rows.values() if r["phase"] == "final"),
                    key=lambda r: (r["protocol"], r["method"] != "paragon", r["method"], r["model"], r["seed"]))
    findings = f_findings(args, f) + ablation_findings(args, abl) + wide_findings(args, fw)
    open_search = rows.get(search_run(study, "open_set", args.open_method, "r3", 0).key)
    if open_search is not None:
        record_open_arch(args, study, open_search)
    if draw or time.monotonic() - _LAST_DRAW[0] >= DRAW_EVERY_S:
        figs, _LAST_DRAW[0] = figures(args, study, rows, f, abl, fw), time.monotonic()
    else:
        figs = _previous_figures(args)
    kinds = {"supernet": lambda r: r["model"] == "supernet", "search": lambda r: r["model"].startswith("search_"),
             "retrain": lambda r: r["model"] not in ("supernet", "paths") and not r["model"].startswith("search_")}
    timings = {"this_call_wall": round(time.perf_counter() - started, 1),
               **{f"{k}_train_or_search_s": round(sum(r.get("train_seconds") or r.get("search_seconds") or 0
                                                      for r in rows.values() if test(r))) for k, test in kinds.items()}}
    extra = {"git_revision": runner.revision, "settings": settings_record(args, study), "findings": findings,
             "f_study": f, "f_wide_study": fw, "ablation": abl, "figures": figs, "failures": runner.failures, "quick": args.quick,
             "runs_finished": len(rows), "runs_declared": len(keys)}
    return write_results(args.results, protocol=protocol_text(args, study), rows=finals, timings_s=timings,
                         extra=extra, results_dir=args.results_dir, markdown=render_markdown)[1]


def settings_record(args, study: Study) -> dict:
    return {"method": args.method, "open_method": args.open_method, "paper_method": args.paper_method,
            "f_methods": args.f_methods,
            "open_methods": args.open_methods, "seeds": args.seeds, "epochs": args.epochs,
            "path_epochs": args.path_epochs, "supernet_epochs": supernet_epochs(study), "budget_mflops": study.budget,
            "paths": study.paths, "retrain_paths": args.retrain_paths, "path_seed": study.path_seed,
            "wide_paths": study.wide_paths, "wide_min_mflops": study.wide_min_mflops,
            "val_classes": args.val_classes, "caps": list(study.settings.caps), "search": list(study.search_overrides),
            "runs": study.settings.runs, "gallery_epochs": args.gallery_epochs}


def protocol_text(args, study: Study) -> dict:
    return {"data": "Fashion-MNIST" + (f", caps {', '.join(study.settings.caps)}" if study.settings.caps else ""),
            "closed_set": P.CLOSED_SET.description,
            "open_set": P.OPEN_SET.description.replace("{val_classes}", f"{args.val_classes:g}"),
            "search": f"evolution (configs/fashion_mnist/search.yaml), budget {study.budget:g} MFLOPs, on the supernet's "
                      "validation split (open set: the validation classes, class-disjoint; never test)",
            "supernet": "configs/fashion_mnist/supernet.yaml on the protocol's select-phase data against its "
                        "select-phase gallery; compat.method as the row's method (none: no compatibility)",
            "F study": "paths sampled as the search's random draws; supernet scores with inherited weights and BN "
                       "recalibrated; retrained paths and hand-designed nets scored on validation (M(q, g) and "
                       "M(q, q)); Kendall τ-b, 95% percentile bootstrap over paths (2,000 resamples)",
            "ablation": "searched nets retrained from scratch with the row's method, scored once on TEST",
            "rewards": f"r1 = M(a,a), r2 = M(a,g), r3 = M(a,g) + {r3_alpha():g} M(a,a) (Recall@1)"}


def _md_section(title: str, rows: list[dict], columns: list[str]) -> list[str]:
    return [f"## {title}", "", markdown_table(rows, columns) if rows else "(no finished runs yet)", ""]


def _f_sections(fm: dict, method: str, title: str, paths_title: str) -> list[str]:
    """An F study's τ table and its paths' table."""
    cols = ["index", "arch", "mflops"] + sorted({k for e in fm["paths"] for k in e
                                                 if k.endswith(("_homo", "_hetero", "_r3")) and k not in
                                                 ("retrained_homo", "retrained_hetero", "retest_hetero")})
    return (_md_section(f"{title}: Kendall τ, supernet score vs retrained score (paths retrained with {method}, "
                        f"{fm['retrained']} of {fm['planned']})", fm["taus"],
                        ["supernet_method", "supernet_score", "retrained_score", "tau", "lo", "hi", "n"])
            + _md_section(f"{paths_title} ({method})", fm["paths"],
                          cols + ["retrained_hetero", "retrained_homo", "retest_hetero"]))


def render_markdown(payload: dict) -> str:
    s = payload["settings"]
    lines = ["# The paper's findings, tested with seeds (CMP-NAS; issue 23)", "",
             f"Command: `{payload['command']}`  ", f"Git revision: {payload['git_revision']}  ",
             f"Machine: {payload['machine']}  ", f"Runs finished: {payload['runs_finished']} of "
             f"{payload['runs_declared']}" + (" — QUICK RUN: tiny caps, a check of the machinery, not evidence"
                                               if payload["quick"] else ""), "",
             "Protocol: " + "; ".join(f"**{k}**: {v}" for k, v in payload["protocol"].items()), "",
             f"Settings: {json.dumps(s)}", ""]
    lines += _md_section("Findings", payload["findings"], ["id", "method", "claim", "verdict", "numbers"])
    lines += ["Rules: " + "; ".join(dict.fromkeys(f["rule"] for f in payload["findings"])), ""]
    lines += ["## Figures", ""] + [f"![{fig['what']}]({fig['file']})  \n{fig['what']} (seeds {fig['seeds']}; "
                                   f"runs' commands: {'; '.join(f'`{c}`' for c in fig['commands'])})\n"
                                   for fig in payload["figures"]]
    for method, fm in payload["f_study"]["methods"].items():
        lines += _f_sections(fm, method, "F2/F3", "Sampled paths")
        lines += [f"Retrain noise ({fm['retest'].get('n', 0)} of {fm['retest']['planned']} paths retrained again with "
                  f"seed {RETEST_SEED}): {_fmt_retest(fm['retest'])}. No supernet can rank the retrained scores "
                  "better than a second retrain does.", ""]
        lines += _md_section(f"F1: hand-designed nets beside the retrained paths ({method}, validation)", fm["hand"],
                             ["model", "mflops", "val_recall_at_1", "val_homo_recall_at_1"])
        lines += _md_section(f"F4: the searches' winners (R3, one search per seed) retrained as the paths are "
                             f"({method}, validation)", fm["searched"],
                             ["seed", "arch", "mflops", "val_recall_at_1", "val_homo_recall_at_1"])
    for method, fm in payload.get("f_wide_study", {"methods": {}})["methods"].items():
        if fm["retrained"] or any(k.endswith("_hetero") for e in fm["paths"] for k in e):
            lines += _f_sections(fm, method, f"F2/F3 where the paths differ ({s['wide_min_mflops']:g}-"
                                             f"{s['budget_mflops']:g} MFLOPs, stratified)", "Stratified paths")
            lines += [f"Retrain noise: {_fmt_retest(fm['retest'])}.", ""]
    abl = payload["ablation"]
    lines += _md_section("Ablations: test M(q, g), mean and std over seeds", abl["summary"],
                         ["protocol", "method", "model", "seeds", "recall_at_1_mean", "recall_at_1_std",
                          "homo_recall_at_1_mean", "homo_recall_at_1_std", "query_mflops_mean", "archs"])
    lines += _md_section("Every final run (test)", payload["rows"],
                         ["protocol", "method", "model", "seed", "epochs", "recall_at_1", "homo_recall_at_1",
                          "map_at_r", "query_mflops", "arch", "git_revision"])
    if payload["failures"]:
        lines += [f"Failed runs (rerun the command to retry): {payload['failures']}", ""]
    lines += ["Timings (s): " + ", ".join(f"{k} {v}" for k, v in payload["timings_s"].items()), ""]
    return "\n".join(lines)


def record_open_arch(args, study: Study, row: dict) -> Path:
    """write_open_arch, unless the file already records this search: a later call (another part, another
    command line) leaves the command that made it alone."""
    path = Path(args.results_dir) / ("cmpnas_open_set" + ("_quick" if args.quick else "") + ".json")
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        recorded = {}
    if (recorded.get("search_run"), recorded.get("arch")) == (row["run"], row["arch"]):
        return path
    return write_open_arch(args, study, row)


def write_open_arch(args, study: Study, row: dict) -> Path:
    """docs/results/cmpnas_open_set.json: the open-set search's arch, as --cmpnas-arch open_set=ARCH."""
    arch = row["arch"]
    name = "cmpnas_open_set" + ("_quick" if args.quick else "")
    extra = {"arch": arch, "cmpnas_arch": f"open_set={arch}", "mflops": row["mflops"], "budget_mflops": study.budget,
             "method": row["method"], "reward": row["reward"], "seed": row["seed"], "val_classes": args.val_classes,
             "val": {"reward": row["val_reward"], "recall_at_1": row["val_recall_at_1"],
                     "homo_recall_at_1": row["val_homo_recall_at_1"]},
             "search_dir": row["search_dir"], "supernet": row["supernet"], "gallery_model": row["gallery_model_path"],
             "search_run": row["run"], "search_command": row["command"], "git_revision": row["git_revision"],
             "quick": args.quick, "use": f"python bench/gallery_aware.py --cmpnas-arch open_set={arch} ..."}
    protocol = {"open_set": f"supernet and search on the open set's training classes minus {args.val_classes:g} "
                            "validation classes (data.val_classes), against the gallery trained on the same classes; "
                            "reward R3 on the validation classes (each image against the others); the 5 test "
                            "classes are never seen"}

    def markdown(payload: dict) -> str:
        return "\n".join([f"# CMP-NAS searched on the open set's training classes only (issue 20.3)", "",
                          f"Arch: `{arch}` ({row['mflops']:.3f} MFLOPs); use: `{extra['use']}`", "",
                          f"Search: `{row['command']}` (git {row['git_revision']}, seed {row['seed']}, method "
                          f"{row['method']}, reward {row['reward']}); validation M(a,g) {row['val_recall_at_1']:.4f}, "
                          f"M(a,a) {row['val_homo_recall_at_1']:.4f} (inherited weights)", "",
                          "Protocol: " + protocol["open_set"], ""])

    return write_results(name, protocol=protocol, rows=[], timings_s={"search_s": row["search_seconds"]}, extra=extra,
                         results_dir=args.results_dir, markdown=markdown)[0]


# ----------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2,000 / 400 images, 1-epoch models, tiny searches, 6 paths "
                                                        "(3 retrained), 2 seeds, no BCT: checks the machinery")
    p.add_argument("--parts", default=",".join(PARTS), help=f"of {', '.join(PARTS)}, run in the order given")
    p.add_argument("--method", default=BEST_METHOD, help=f"the project's best compat method (default {BEST_METHOD})")
    p.add_argument("--open-method", default=OPEN_METHOD, help="the open set's compat method: the supernet of "
                                                              f"open_search and of the open part, its retrains "
                                                              f"(default {OPEN_METHOD})")
    p.add_argument("--paper-method", default=None, help="the paper's method, ablated beside it on the closed set "
                                                        "(default bct; '' for none)")
    p.add_argument("--f-methods", default=None, help="methods the F study retrains paths with (default --method)")
    p.add_argument("--seeds", default=None, help="ablation seeds (default 0,1,2)")
    p.add_argument("--variants", default=None, help="ablation and open: run only these of r3,nocompat,r1,r2,random (the "
                                                   "hand-designed net always; the results report every finished one)")
    p.add_argument("--epochs", type=int, default=None, help="retrain epochs of the ablation's nets (default 30)")
    p.add_argument("--path-epochs", type=int, default=None, help="retrain epochs of the F study (default --epochs)")
    p.add_argument("--supernet-epochs", type=int, default=None, help="default: configs/fashion_mnist/supernet.yaml")
    p.add_argument("--budget", type=float, default=1.9, help="search budget, MFLOPs (default 1.9)")
    p.add_argument("--paths", type=int, default=None, help="paths sampled for the F study (default 30)")
    p.add_argument("--retrain-paths", type=int, default=None, help="of them retrained (default 12)")
    p.add_argument("--retest-paths", type=int, default=None, help=f"of those retrained again with seed {RETEST_SEED}: "
                                                                  "how well one retrain ranks paths (default 6)")
    p.add_argument("--wide-paths", type=int, default=None, help="f_wide: paths stratified over [--wide-min-mflops, "
                                                              "budget], each retrained (default 12)")
    p.add_argument("--wide-min-mflops", type=float, default=0.9, help="f_wide: the cheapest bin's lower edge (default "
                                                                    "0.9; the space's smallest path costs 0.77 at 28 px)")
    p.add_argument("--val-classes", type=float, default=2, help="open set: training classes held out as validation")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, one process each (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default 1 with --jobs > 1)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: auto)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (data.root)")
    p.add_argument("--gallery-epochs", type=int, default=None, help="gallery epochs (default: the paragon's 15)")
    p.add_argument("--runs", default=None, help="runs folder (default runs/bench; quick runs/bench_ps_quick)")
    p.add_argument("--results", default=None, help="results name (default paper_study; quick paper_study_quick)")
    p.add_argument("--results-dir", default="docs/results")
    p.add_argument("--report-only", action="store_true", help="rewrite the results from finished rows only")
    args = p.parse_args(argv)
    return _defaults(args)


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    q = args.quick
    args.parts = [x for x in args.parts.split(",") if x]
    bad = sorted(set(args.parts) - set(PARTS))
    if bad:
        raise SystemExit(f"unknown part(s) {bad}; known: {', '.join(PARTS)}")
    if args.paper_method is None:
        args.paper_method = QUICK["paper_method"] if q else PAPER_METHOD
    args.methods = list(dict.fromkeys([args.method, *([args.paper_method] if args.paper_method else [])]))
    args.open_methods = [args.open_method]
    args.f_methods = [m for m in (args.f_methods or args.method).split(",") if m]
    args.variants = args.variants.split(",") if args.variants else None
    bad = sorted(set(args.variants or ()) - set(CLOSED_VARIANTS))
    if bad:
        raise SystemExit(f"unknown variant(s) {bad}; known: {', '.join(CLOSED_VARIANTS)}")
    args.seeds = [int(s) for s in (args.seeds or (QUICK["seeds"] if q else "0,1,2")).split(",")]
    args.epochs = args.epochs or (QUICK["epochs"] if q else 30)
    args.path_epochs = args.path_epochs or args.epochs
    args.supernet_epochs = args.supernet_epochs or (QUICK["supernet_epochs"] if q else None)
    args.paths = args.paths or (QUICK["paths"] if q else 30)
    args.retrain_paths = min(args.paths, args.retrain_paths or (QUICK["retrain_paths"] if q else 12))
    args.retest_paths = min(args.retrain_paths, QUICK["retest_paths"] if q and args.retest_paths is None
                            else 6 if args.retest_paths is None else args.retest_paths)
    args.wide_paths = args.wide_paths or (QUICK["wide_paths"] if q else 12)
    args.gallery_epochs = args.gallery_epochs or (QUICK["gallery_epochs"] if q else None)
    args.threads = args.threads or (1 if args.jobs > 1 else None)
    args.runs = args.runs or (f"{_shared.BENCH_RUNS}_ps_quick" if q else _shared.BENCH_RUNS)
    args.results = args.results or ("paper_study_quick" if q else "paper_study")
    return args


def study_of(args) -> Study:
    settings = P.Settings(runs=args.runs, prefix="ps", caps=QUICK["caps"] if args.quick else (), data_dir=args.data_dir,
                          device=args.device, threads=args.threads, gallery_epochs=args.gallery_epochs,
                          val_classes=args.val_classes)
    return Study(settings, budget=args.budget, supernet_epochs=args.supernet_epochs, paths=args.paths,
                 search_overrides=tuple(QUICK["search"]) if args.quick else (), wide_paths=args.wide_paths,
                 wide_min_mflops=args.wide_min_mflops)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    started = time.perf_counter()
    study = study_of(args)
    runner = Runner(rows_dir(study), functools.partial(job, study), jobs=args.jobs, threads=args.threads,
                    on_row=lambda row: report(args, study, runner, started))
    if not args.report_only:
        print(f"[paper_study] parts {', '.join(args.parts)}", flush=True)
        run_parts(args, study, runner)
    path = report(args, study, runner, started, draw=True)
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
