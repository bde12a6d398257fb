"""What each paper table is made of: the runs (arms x seeds), the cells and the claims.

An :class:`Arm` is one model configuration (model, readout layer, region, alpha:beta, neuron subset); a run is
an arm with a seed. A table is a :class:`Layout`: rows of cells, each cell one (arm, metric) shown as our mean
over seeds with its 95% interval next to the paper's published value, and :class:`Claim` s, each a paired
comparison of two arms (same seeds) in the direction the paper claims.

Arms use the paper's presets (Tables 8-13, :mod:`daenr_fast.train.presets`); baselines use the weights in
:data:`daenr_fast.experiments.protocol.SILENT_CHOICES`. Table 3's subset arms (``sig`` / ``insig``) take their
neurons from the all-neuron ``parent`` arm's run with the same seed.

Targets ``table4+gr``, ``table5+gr`` and ``table6+gr`` add rows for the Gaussian readout (``cae-gr``, ...,
``cnn-gr``), which the paper does not have: their labels end in ``(not in paper)``, they have no paper value and
no claim, and each joint GR arm takes the alpha:beta of the paper's FR preset for the same autoencoder, layer and
region (the paper has no GR preset). The paper's own rows and claims are the same as without the suffix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from daenr_fast.models.readouts import EXTRA_READOUTS
from daenr_fast.models.registry import display_name
from daenr_fast.train.presets import get_preset

REGIONS = (1, 2, 3)
LAYERS = (1, 2, 3, 4)
VARIANTS = ("cae-fr", "vae-fr", "vq-vae-fr", "cae-fc", "vae-fc", "vq-vae-fc", "cae-fm", "vae-fm", "vq-vae-fm")
TABLE5_ORDER = ("cae-fr", "cae-fc", "cae-fm", "vae-fr", "vae-fc", "vae-fm", "vq-vae-fr", "vq-vae-fc", "vq-vae-fm")
LOWER_IS_BETTER = {"mse": True, "psnr": False, "ssim": False, "pcc": False}
METRIC_LABEL = {"mse": "MSE", "psnr": "PSNR", "ssim": "SSIM", "pcc": "PCC"}
NS_TABLE = {1: "table11", 2: "table12", 3: "table13"}
#: target suffix that adds the extension (Gaussian readout) rows, and the tables it applies to
EXTRA_SUFFIX = "+gr"
EXTENDED = ("table4", "table5", "table6")
#: appended to the row label of every extension row
NOT_IN_PAPER = " (not in paper)"


@dataclass(frozen=True)
class Arm:
    """One model configuration, trained once per seed.

    Attributes:
        model, layer: registry name and readout layer (1..4; nominal for the autoencoder baselines).
        region: recording region 1..3.
        alpha, beta: loss weights; preset: the paper preset they come from (None for baselines).
        subset: ``all`` neurons, or only the ``sig`` / ``insig`` neurons of ``parent``'s run (same seed).
    """

    model: str
    layer: int
    region: int
    alpha: float
    beta: float
    preset: Optional[str] = None
    subset: str = "all"
    parent: Optional["Arm"] = None

    @property
    def label(self) -> str:
        """The paper's name, e.g. ``CAE-FR2``, ``VQ-VAE``."""
        return display_name(self.model, self.layer)

    def identity(self) -> dict:
        """The fields that define the arm (for run ids)."""
        out = {"model": self.model, "layer": self.layer, "region": self.region, "alpha": self.alpha,
               "beta": self.beta, "subset": self.subset}
        if self.parent is not None:
            out["parent"] = self.parent.identity()
        return out


def preset_arm(table: str, region: int, model: str, layer: int, subset: str = "all",
               parent: Optional[Arm] = None) -> Arm:
    """The arm of a paper preset (alpha:beta from Tables 8-13)."""
    p = get_preset(f"{table}:region{region}:{model}{layer}")
    return Arm(model, layer, region, p.alpha, p.beta, p.name, subset, parent)


def extension_arm(table: str, region: int, model: str, layer: int) -> Arm:
    """An arm of a readout beyond the paper (``cae-gr``, ..., ``cnn-gr``): a readout-only model as the CNN
    baselines, a joint model with the alpha:beta of the paper's FR preset of the same autoencoder and layer."""
    if model.startswith("cnn-"):
        return baseline_arm(model, region, layer)
    autoencoder = model.rsplit("-", 1)[0]
    p = get_preset(f"{table}:region{region}:{autoencoder}-fr{layer}")
    return Arm(model, layer, region, p.alpha, p.beta)


def baseline_arm(model: str, region: int, layer: int = 1) -> Arm:
    """An autoencoder baseline (image loss only) or a CNN baseline (Poisson loss only)."""
    if model.startswith("cnn-"):
        return Arm(model, layer, region, 0.0, 1.0)
    return Arm(model, 1, region, 1.0, 0.0)


@dataclass(frozen=True)
class Cell:
    """One number of a table: ``metric`` of ``arm``; ``paper`` = (table, model label, subset) for the lookup."""

    arm: Arm
    metric: str
    paper: Tuple[str, str, str]


@dataclass(frozen=True)
class Claim:
    """The paper's claim that ``better`` beats ``worse`` on each of ``metrics`` (paired over seeds)."""

    text: str
    better: Arm
    worse: Arm
    metrics: Tuple[str, ...]
    paper_table: str


@dataclass
class Layout:
    """A paper table: header, rows of cells (None = empty), the claims, and a note."""

    name: str
    title: str
    header: List[str]
    rows: List[Tuple[str, List[Optional[Cell]]]]
    claims: List[Claim] = field(default_factory=list)
    note: str = ""

    def arms(self) -> List[Arm]:
        """Every arm the table needs (parents first, no duplicates)."""
        out: Dict[Arm, None] = {}
        for _, cells in self.rows:
            for cell in cells:
                if cell is not None:
                    if cell.arm.parent is not None:
                        out.setdefault(cell.arm.parent)
                    out.setdefault(cell.arm)
        for claim in self.claims:
            out.setdefault(claim.better)
            out.setdefault(claim.worse)
        return list(out)


def table2(regions: Sequence[int] = REGIONS) -> Layout:
    """CAE vs CAE-FR1..4, image reconstruction, Table 8 weights."""
    metrics = ("mse", "psnr", "ssim")
    header = ["model"] + [f"R{r} {METRIC_LABEL[m]}" for r in regions for m in metrics]
    arms = {(r, 0): baseline_arm("cae", r) for r in regions}
    arms.update({(r, i): preset_arm("table8", r, "cae-fr", i) for r in regions for i in LAYERS})
    rows = []
    for i in (0,) + LAYERS:
        label = arms[(regions[0], i)].label
        rows.append((label, [Cell(arms[(r, i)], m, ("table2", label, "all")) for r in regions for m in metrics]))
    claims = [Claim(f"R{r}: CAE-FR{i} (Table 8 weights) reconstructs better than CAE", arms[(r, i)], arms[(r, 0)],
                    metrics, "table2") for r in regions for i in LAYERS]
    return Layout("table2", "Table 2 - image reconstruction with all neurons, CAE vs CAE-FRi", header, rows, claims)


def table3_parents() -> Dict[int, Arm]:
    """The all-neuron CAE-FRi runs of region 3 (Table 8 weights) whose significance splits the neurons."""
    return {i: preset_arm("table8", 3, "cae-fr", i) for i in LAYERS}


def table3(regions: Sequence[int] = REGIONS) -> Layout:
    """CAE-FRi trained on the significant vs the insignificant neurons only, region 3."""
    metrics = ("mse", "ssim", "psnr")
    header = ["model"] + [f"{METRIC_LABEL[m]} {s}" for m in metrics for s in ("sig", "insig")] + ["MSE all"]
    rows, claims = [], []
    if 3 not in regions:
        return Layout("table3", "Table 3 (region 3 only; not selected)", header, rows)
    for i, parent in table3_parents().items():
        sub = {s: preset_arm("table8", 3, "cae-fr", i, s, parent) for s in ("sig", "insig")}
        cells = [Cell(sub[s], m, ("table3", parent.label, s)) for m in metrics for s in ("sig", "insig")]
        rows.append((parent.label, cells + [Cell(parent, "mse", ("table2", parent.label, "all"))]))
        claims.append(Claim(f"R3: CAE-FR{i} (Table 8 weights) on significant neurons beats it on insignificant neurons",
                            sub["sig"], sub["insig"], metrics, "table3"))
    note = ("Neuron groups: p <= 0.05 of each neuron's PCC in the all-neuron CAE-FRi run with the same seed "
            "(column 'MSE all'); a group with no neuron leaves its runs empty.")
    return Layout("table3", "Table 3 - region 3, only significant (sig) or only insignificant (insig) neurons",
                  header, rows, claims, note)


def table4(regions: Sequence[int] = REGIONS, extras: bool = False) -> Layout:
    """PCC of CNN-FRi (readout only) vs CAE-FRi (joint, Table 9 weights); ``extras``: a row per region of CNN-GRi
    and CAE-GRi (Table 9's CAE-FRi weights), under the FR columns of the same layer."""
    header = ["region"] + [f"{k}-FR{i}" for i in LAYERS for k in ("CNN", "CAE")]
    rows, claims = [], []
    for r in regions:
        cells = []
        for i in LAYERS:
            cnn, cae = baseline_arm("cnn-fr", r, i), preset_arm("table9", r, "cae-fr", i)
            cells += [Cell(cnn, "pcc", ("table4", cnn.label, "all")), Cell(cae, "pcc", ("table4", cae.label, "all"))]
            claims.append(Claim(f"R{r}: CAE-FR{i} (Table 9 weights) predicts responses better than CNN-FR{i}",
                                cae, cnn, ("pcc",), "table4"))
        rows.append((f"region {r}", cells))
        if extras:
            for ro in EXTRA_READOUTS:
                arms = [a for i in LAYERS for a in (extension_arm("table9", r, f"cnn-{ro}", i),
                                                    extension_arm("table9", r, f"cae-{ro}", i))]
                rows.append((f"region {r}: CNN-{ro.upper()}i, CAE-{ro.upper()}i{NOT_IN_PAPER}",
                             [Cell(a, "pcc", ("table4", a.label, "all")) for a in arms]))
    return Layout("table4", "Table 4 - PCC, CNN-FRi (readout only) vs CAE-FRi (joint)", header, rows, claims,
                  _extras_note(extras, "Table 9"))


def table5(regions: Sequence[int] = REGIONS, extras: bool = False) -> Layout:
    """All nine variants and the three DAE baselines, image reconstruction, region 3, Table 10 weights."""
    header = ["model", "metric", "h1", "h2", "h3", "h4"]
    rows, claims = [], []
    if 3 not in regions:
        return Layout("table5", "Table 5 (region 3 only; not selected)", header, rows)
    base = {ae: baseline_arm(ae, 3) for ae in ("cae", "vae", "vq-vae")}
    for ae, arm in base.items():
        for m in ("mse", "psnr", "ssim"):
            rows.append((arm.label, [None] + [Cell(arm, m, ("table5", arm.label, "all"))] * 4))
    for model in TABLE5_ORDER:
        arms = [preset_arm("table10", 3, model, i) for i in LAYERS]
        for m in ("mse", "psnr", "ssim"):
            rows.append((model.upper(), [None] + [Cell(a, m, ("table5", a.label, "all")) for a in arms]))
        ae = model.rsplit("-", 1)[0]
        claims += [Claim(f"R3: {a.label} (Table 10 weights) reconstructs better than {base[ae].label}", a, base[ae],
                         ("mse", "psnr", "ssim"), "table5") for a in arms]
    for model in _extra_joint_models() if extras else ():
        arms = [extension_arm("table10", 3, model, i) for i in LAYERS]
        for m in ("mse", "psnr", "ssim"):
            rows.append((model.upper() + NOT_IN_PAPER, [None] + [Cell(a, m, ("table5", a.label, "all")) for a in arms]))
    note = "Baselines do not depend on i; their value is repeated in h1..h4."
    return Layout("table5", "Table 5 - region 3, image reconstruction, all variants (readout at h1..h4)",
                  header, rows, claims, " ".join(filter(None, [note, _extras_note(extras, "Table 10")])))


def table6(regions: Sequence[int] = REGIONS, extras: bool = False) -> Layout:
    """PCC of the nine variants (Tables 11-13 weights) and the CNN-FR/FC/FM baselines; ``extras``: CNN-GR and the
    joint GR models (their FR counterparts' weights)."""
    header = ["model"] + [f"R{r} h{i}" for r in regions for i in LAYERS]
    rows, claims = [], []
    for readout in ("fr", "fc", "fm"):
        cnn = {(r, i): baseline_arm(f"cnn-{readout}", r, i) for r in regions for i in LAYERS}
        rows.append((f"CNN-{readout.upper()}", [Cell(cnn[k], "pcc", ("table6", cnn[k].label, "all")) for k in cnn]))
        for ae in ("cae", "vae", "vq-vae"):
            model = f"{ae}-{readout}"
            arms = {(r, i): preset_arm(NS_TABLE[r], r, model, i) for r in regions for i in LAYERS}
            rows.append((model.upper(), [Cell(arms[k], "pcc", ("table6", arms[k].label, "all")) for k in arms]))
            claims += [Claim(f"R{r}: {arms[(r, i)].label} (Table {NS_TABLE[r][5:]} weights) predicts responses "
                             f"better than {cnn[(r, i)].label}", arms[(r, i)], cnn[(r, i)], ("pcc",), "table6")
                       for r in regions for i in LAYERS]
    for ro in EXTRA_READOUTS if extras else ():
        for model in (f"cnn-{ro}",) + tuple(m for m in _extra_joint_models() if m.endswith(f"-{ro}")):
            arms = {(r, i): extension_arm(NS_TABLE[r], r, model, i) for r in regions for i in LAYERS}
            rows.append((model.upper() + NOT_IN_PAPER, [Cell(arms[k], "pcc", ("table6", arms[k].label, "all"))
                                                        for k in arms]))
    return Layout("table6", "Table 6 - PCC, all variants vs the CNN baselines", header, rows, claims,
                  _extras_note(extras, "Tables 11-13"))


def _extra_joint_models() -> Tuple[str, ...]:
    return tuple(f"{ae}-{ro}" for ro in EXTRA_READOUTS for ae in ("cae", "vae", "vq-vae"))


def _extras_note(extras: bool, weights: str) -> str:
    if not extras:
        return ""
    return (f"Rows marked{NOT_IN_PAPER} are the Gaussian readout, which the paper does not have: no paper value, no "
            f"claim; the joint GR models use the {weights} alpha:beta of the FR model with the same autoencoder and "
            f"layer.")


def figure_arms(regions: Sequence[int] = REGIONS) -> List[Arm]:
    """The runs behind Figures 2-4: Table 2's region-3 arms (Fig. 2, 3) and Table 4's (Fig. 4)."""
    regs = [r for r in regions if r == 3] or list(regions)[-1:]
    return list(dict.fromkeys(table2(regs).arms() + table4(regs).arms()))


LAYOUTS = {"table2": table2, "table3": table3, "table4": table4, "table5": table5, "table6": table6}
TARGETS = tuple(LAYOUTS) + tuple(t + EXTRA_SUFFIX for t in EXTENDED) + ("figures", "all")


def layouts_for(target: str, regions: Sequence[int] = REGIONS) -> List[Layout]:
    """The tables a ``daenr reproduce TARGET`` prints (``figures`` prints none, ``all`` prints every one;
    ``tableN+gr`` is table N with the extension rows)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
    if target.endswith(EXTRA_SUFFIX):
        return [LAYOUTS[target[:-len(EXTRA_SUFFIX)]](tuple(regions), extras=True)]
    names = list(LAYOUTS) if target == "all" else [] if target == "figures" else [target]
    return [LAYOUTS[n](tuple(regions)) for n in names]


def arms_for(target: str, regions: Sequence[int] = REGIONS) -> List[Arm]:
    """Every arm ``target`` trains, parents before the subset arms that need them (Figures 2-4 come from the
    runs of Tables 2 and 4, so ``figures`` trains their region-3 arms)."""
    arms: Dict[Arm, None] = {}
    for layout in layouts_for(target, regions):
        arms.update(dict.fromkeys(layout.arms()))
    if target == "figures":
        arms.update(dict.fromkeys(figure_arms(regions)))
    return sorted(arms, key=lambda a: a.parent is not None)
