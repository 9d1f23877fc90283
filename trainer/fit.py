"""Training one network (or a small ensemble) on windows: seeded, class-balanced, early-stopped."""
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn

from rtclassify.config import dataclass_from_dict
from rtclassify.model.network import DEFAULT_BRANCHES, TripleInputCNN
from trainer.distributed import rank_and_size


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (stored in the model card)."""

    branches: tuple = DEFAULT_BRANCHES  # inputs of the CNN (see rtclassify.model.network.BRANCH_INPUTS)
    channels: int = 32  # conv channels per branch
    depth: int = 6  # conv + ReLU + batch-norm layers per branch (the published model uses 6)
    kernel: int = 5  # convolution kernel size, samples (odd: the padding keeps the length)
    hidden: int = 64  # dense layer width
    dropout: float = 0.3  # dropout before the output layer
    lr: float = 2e-3  # Adam peak learning rate (cosine-annealed)
    weight_decay: float = 1e-5  # Adam weight decay (published value)
    batch_size: int = 64
    max_epochs: int = 100  # upper bound; training stops earlier when validation loss stalls
    patience: int = 25  # epochs without validation improvement before stopping
    val_fraction: float = 0.15  # share of training cells held out (stratified, by cell) for early stopping;
    # 0 trains all max_epochs on every training cell and keeps the final weights
    label_smoothing: float = 0.05
    balance: bool = True  # class-weighted loss (inverse class frequency)
    balance_power: float = 1.0  # class weights = (inverse frequency) ** power; 0.5 softens the re-weighting
    sampling_power: float = 0.0  # > 0: each epoch draws its windows (with replacement) with probability
    # (inverse class frequency) ** power instead of shuffling them once each (class-balanced sampling)
    aug_shift: int = 1  # max |shift| in samples (jitter of the peak position)
    aug_subsample: float = 0.0  # max |shift| of a per-window band-limited sub-sample delay, samples: a peak
    # recorded at 50 kHz lies up to half a sample off the window's centre, one recorded at 200 kHz almost on it
    aug_gain: float = 0.03  # relative s.d. of an amplitude gain
    aug_offset_mv: float = 2.0  # s.d. of a baseline offset, mV
    aug_noise_mv: float = 0.3  # s.d. of white noise, mV
    aug_smooth: float = 0.0  # probability that a window is smoothed by a random Gaussian (0-1.2 samples s.d.),
    # mimicking the amplifier's low-pass filter, which differs between rigs and sampling rates
    mixup: float = 0.0  # alpha of the Beta distribution of mixup (0: off)
    rig_draws: int = 0  # > 0: every cell's AP also recorded through this many random acquisition chains
    # (trainer/rigs.py: rate, analog filter, gain, offset, noise, hum, temperature), cut as serve cuts
    rig_share: float = 0.7  # share of training windows taken from a random one of those draws, the rest as recorded
    rig_seed: int = 0  # seed of the rigs drawn (the pool is made once per training run)
    rig_rates_hz: tuple | None = None  # (low, high): draw every rig's rate log-uniform in this range instead of
    # trainer/rigs.py's distribution (a rate specialist, e.g. (10000, 15000))
    rig_cooled_share: float = 0.5  # share of rigs drawn below 34 °C (22-34 °C, the AP widened and read back
    # with the temperature warp); the others at 34 °C
    rig_undeclared_share: float = 0.0  # share of those cooled rigs whose temperature is not declared: the AP
    # read as if at 34 °C (no warp), as a lab that does not say its temperature gives it
    related_lines: bool = False  # also train on cells of related Cre lines (trainer/cre_related.csv; never scored)
    members: int = 1  # networks in the ensemble (different seeds and validation splits)
    member_options: tuple = ()  # per-member overrides of these options, cycled over the members (member m
    # takes member_options[m % len]), e.g. ({}, {"channels": 48}): teachers that differ by more than a seed
    distil: bool = False  # with members > 1: distil the ensemble into one student network of the same
    # shape, trained on the ensemble's softened outputs; the student alone is the model (1/members the
    # inference cost, which the daemon's latency budget needs)
    distil_weight: float = 0.7  # share of the loss taken by the teachers' soft targets
    distil_temperature: float = 2.0
    distil_unlabelled: bool = False  # the student also learns the teachers' outputs on the APs of training-side
    # cells outside the task (other Cre lines, no label): soft targets only, more of the AP space to imitate
    student_channels: int | None = None  # conv channels of the distilled student (None: as the teachers)
    student_depth: int | None = None  # conv layers per branch of the distilled student (None: as the teachers)
    student_epochs: int | None = None  # epochs of the distilled student (None: max_epochs, as the teachers)
    student_mixup: float | None = None  # mixup alpha of the distilled student (None: mixup, as the teachers); the
    # student mostly imitates its teachers, who answer on any mixture, so it may mix more than they did
    aux_weight: float = 0.0  # > 0: networks trained with auxiliary labels (see aux_target) get extra outputs for
    # them, this weight of their loss, learnt on every training-side cell that has one, including cells outside
    # the task (other Cre lines); the extra outputs are dropped after training. Only ensemble members (teachers)
    # get these labels; a distilled student learns from its teachers
    aux_target: str = "dendrite"  # the auxiliary labels: "dendrite" (spiny / aspiny), "line" (the Cre line,
    # lines with >= 10 training-side cells) or "line_layer" (line and layer; trainer.labels.auxiliary_labels)
    logit_adjust: float = 0.0  # after training, the output bias of the final network(s) (not of teachers) is
    # lowered by logit_adjust * log(training class frequency): decisions move towards the rarer classes,
    # trading a little precision for recall where balanced accuracy counts every class alike
    output_shift: float = 0.0  # the exported file's logits raised by -output_shift * log(training class frequency)
    # before its temperature (card `output_shift`): the same kind of shift as logit_adjust, made on the file so
    # that the evaluation's saved predictions stay the network's own and the shift is chosen on them
    # (`python -m trainer bias-sweep`, nested over the development folds)
    threads: int = 2  # torch CPU threads
    train_fraction: float = 1.0  # evaluation only (learning curve): share of each fold's training-side cells
    # used, labelled ones stratified by class, cells outside the task alike (trainer.evaluate.subsample_training_side)

    @property
    def distilled(self) -> bool:
        """The members are teachers of one student network, which alone is the model."""
        return self.distil and self.members > 1

    def student(self) -> "TrainConfig":
        """The options the distilled student trains with: its own width, depth, epochs and mixup where set."""
        return replace(self, channels=self.student_channels or self.channels, depth=self.student_depth or self.depth,
                       max_epochs=self.student_epochs or self.max_epochs,
                       mixup=self.mixup if self.student_mixup is None else self.student_mixup)

    def member(self, m: int) -> "TrainConfig":
        """The options ensemble member m trains with: this config with member_options[m % len] applied."""
        if not self.member_options:
            return self
        return replace(self, member_options=(), **self.member_options[m % len(self.member_options)])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["branches"] = list(self.branches)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        if "branches" in d:
            d["branches"] = tuple(d["branches"])
        if "member_options" in d:
            d["member_options"] = tuple(d["member_options"])
        if d.get("rig_rates_hz") is not None:
            d["rig_rates_hz"] = tuple(d["rig_rates_hz"])
        return dataclass_from_dict(cls, d, "training options")


@dataclass
class FitResult:
    model: nn.Module  # eval mode
    epochs: int  # epochs run
    best_epoch: int
    history: list = field(default_factory=list)  # per epoch: (train_loss, val_loss)


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_validation(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of cell indices into (train, validation); every class keeps >= 1 training cell.
    Cells without a label (y = -1: auxiliary labels only) all train: they cannot judge early stopping."""
    train, val = list(np.flatnonzero(y < 0)), []
    for c in np.unique(y[y >= 0]):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(fraction * len(idx))) if len(idx) > 2 else 0
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(val, dtype=int))


def class_weights(y: np.ndarray, n_classes: int, power: float = 1.0) -> torch.Tensor:
    """Inverse-frequency weights raised to `power`, normalised to mean 1 over the classes present."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / (n_classes * np.maximum(counts, 1))) ** power, 0.0)
    w = w / w[counts > 0].mean()
    return torch.tensor(w, dtype=torch.float32)


def augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random peak jitter, gain, baseline offset and noise on a (B, L) batch in mV."""
    if cfg.aug_shift:
        shift = int(torch.randint(-cfg.aug_shift, cfg.aug_shift + 1, (1,), generator=gen))
        if shift:
            x = torch.roll(x, shift, dims=1)
    b = x.shape[0]
    gain = 1 + cfg.aug_gain * torch.randn(b, 1, generator=gen)
    offset = cfg.aug_offset_mv * torch.randn(b, 1, generator=gen)
    noise = cfg.aug_noise_mv * torch.randn(x.shape, generator=gen)
    x = x * gain + offset + noise
    if cfg.aug_subsample > 0:
        x = delay_fractionally(x, cfg.aug_subsample * (2 * torch.rand(b, 1, generator=gen) - 1))
    if cfg.aug_smooth > 0:
        x = smooth_randomly(x, cfg.aug_smooth, gen)
    return x


def delay_fractionally(x: torch.Tensor, delay: torch.Tensor) -> torch.Tensor:
    """(B, L) windows delayed by delay (B, 1) samples (any real value), band-limited. The spectral
    phase ramp treats a window as periodic, so the straight line through its end samples is taken
    out first, the rest delayed by its spectrum's phase ramp, and the line put back delayed as well."""
    n = x.shape[1]
    t = torch.arange(n, dtype=x.dtype)
    slope = (x[:, -1:] - x[:, :1]) / (n - 1)  # mV per sample
    rest = x - (x[:, :1] + slope * t)
    freqs = torch.fft.rfftfreq(n, dtype=x.dtype)  # cycles per sample
    delayed = torch.fft.irfft(torch.fft.rfft(rest, dim=1) * torch.exp(-2j * torch.pi * freqs * delay), n=n, dim=1)
    return delayed + x[:, :1] + slope * (t - delay)


def smooth_randomly(x: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """Convolve a random subset of the (B, L) windows with Gaussians of random width (0-1.2 samples s.d.)."""
    b = x.shape[0]
    chosen = torch.rand(b, generator=gen) < probability
    if not bool(chosen.any()):
        return x
    sigma = 0.2 + 1.0 * torch.rand(int(chosen.sum()), 1, generator=gen)  # samples
    taps = torch.arange(-3, 4, dtype=x.dtype)
    kernels = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).unsqueeze(1)  # (M, 1, 7)
    sel = x[chosen].unsqueeze(0)  # (1, M, L): one group per window
    padded = torch.nn.functional.pad(sel, (3, 3), mode="replicate")
    out = x.clone()
    out[chosen] = torch.nn.functional.conv1d(padded, kernels, groups=kernels.shape[0]).squeeze(0)
    return out


def build_network(n_samples: int, fs_hz: float, n_classes: int, cfg: TrainConfig) -> TripleInputCNN:
    return TripleInputCNN(n_samples, fs_hz, n_classes, branches=cfg.branches, channels=cfg.channels,
                          depth=cfg.depth, kernel=cfg.kernel, hidden=cfg.hidden, dropout=cfg.dropout)


def fit_network(x: np.ndarray, y: np.ndarray, n_classes: int, fs_hz: float, cfg: TrainConfig, seed: int,
                init: nn.Module | None = None, progress=None, teachers: list | None = None,
                unlabelled: np.ndarray | None = None, aux: np.ndarray | None = None) -> FitResult:
    """Train one TripleInputCNN on windows x (N, L) mV with labels y (N,) in [0, n_classes).

    init: a trained network whose feature layers (all but the output layer) start this one
    (transfer learning). progress: optional callable(epoch, train_loss, val_loss) per epoch.
    teachers: trained networks whose mean softened output on each (augmented) batch is a second
    target (knowledge distillation, weighted by cfg.distil_weight). unlabelled: (M, L) windows
    mV trained on the teachers' outputs only (label -1, ignored by the label loss); needs teachers.
    aux: (N,) auxiliary label of each window (class index, -1: none), learnt by count_aux_classes(aux)
    extra outputs when cfg.aux_weight > 0 (windows with y = -1 then train those alone); the returned
    network has n_classes outputs.
    """
    torch.set_num_threads(cfg.threads)
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    tr, va = split_validation(y, cfg.val_fraction, rng)
    n_aux = count_aux_classes(aux) if aux is not None and cfg.aux_weight > 0 else 0
    net = build_network(x.shape[-1], fs_hz, n_classes + n_aux, cfg)
    if init is not None:
        transfer_features(init, net)
    xt, yt = torch.from_numpy(x[tr]), torch.from_numpy(y[tr]).long()
    as_recorded = x[:, 0] if x.ndim == 3 else x  # (N, V, L) rig pools: variant 0 is the window as recorded
    if unlabelled is not None and len(unlabelled):
        if not teachers or cfg.sampling_power > 0:
            raise ValueError("unlabelled windows need teachers and no class-balanced sampling")
        xt = torch.cat([xt, torch.from_numpy(np.ascontiguousarray(unlabelled, dtype=np.float32))])
        yt = torch.cat([yt, torch.full((len(unlabelled),), -1, dtype=torch.long)])
    at = None
    if n_aux:
        at = torch.full_like(yt, -1)
        at[:len(tr)] = torch.from_numpy(np.asarray(aux)[tr]).long()
    xv, yv = torch.from_numpy(as_recorded[va]), torch.from_numpy(y[va]).long()
    weights = class_weights(y[tr][y[tr] >= 0], n_classes, cfg.balance_power) if cfg.balance else None
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing, ignore_index=-1)
    val_loss_fn = nn.CrossEntropyLoss(weight=weights)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.max_epochs)
    best, best_epoch, best_state, history = np.inf, 0, None, []
    rank, size = rank_and_size()
    model = torch.nn.parallel.DistributedDataParallel(net) if size > 1 else net
    for epoch in range(cfg.max_epochs):
        net.train()
        order = epoch_order(yt, n_classes, cfg.sampling_power, gen)  # the same order on every rank (same seed)
        total = 0.0
        for idx in batch_indices(order, cfg.batch_size, rank, size):
            loss = batch_loss(model, loss_fn, augment(pick_variants(xt[idx], cfg.rig_share, gen), cfg, gen), yt[idx],
                              cfg, gen, teachers,
                              aux=None if at is None else at[idx], aux_outputs=n_aux)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if not len(va):  # no validation split: a fixed number of epochs, final weights
            history.append((total / len(xt), float("nan")))
            if progress:
                progress(epoch, total / len(xt), float("nan"))
            continue
        val = evaluate_loss(net, xv, yv, val_loss_fn, n_classes)
        history.append((total / len(xt), val))
        if progress:
            progress(epoch, total / len(xt), val)
        if val < best - 1e-4:
            best, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    if n_aux:
        keep_outputs(net, n_classes)
    return FitResult(model=net.eval(), epochs=len(history), best_epoch=best_epoch, history=history)


def pick_variants(x: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """(B, L) windows of a batch: x itself when it is (B, L); from a (B, V, L) rig pool, with
    probability `share` a random one of the V - 1 rig draws of each window, else variant 0 (as recorded)."""
    if x.dim() == 2:
        return x
    b, v = x.shape[:2]
    drawn = 1 + torch.randint(0, v - 1, (b,), generator=gen)
    pick = torch.where(torch.rand(b, generator=gen) < share, drawn, torch.zeros_like(drawn))
    return x[torch.arange(b), pick]


def epoch_order(y: torch.Tensor, n_classes: int, sampling_power: float, gen: torch.Generator) -> torch.Tensor:
    """Indices of one epoch's windows: a permutation, or with sampling_power > 0 as many draws with
    replacement, window i drawn with probability proportional to (1 / count of its class) ** power."""
    if sampling_power <= 0:
        return torch.randperm(len(y), generator=gen)
    counts = torch.bincount(y, minlength=n_classes).clamp(min=1).double()
    weights = counts[y] ** -sampling_power
    return torch.multinomial(weights, len(y), replacement=True, generator=gen)


def batch_indices(order: torch.Tensor, batch_size: int, rank: int = 0, size: int = 1) -> list[torch.Tensor]:
    """This process's index batches of one epoch.

    One process: consecutive batches of batch_size (a last batch of one sample is dropped: batch
    norm needs two). Several (torchrun): global batches of batch_size * size, rank r taking slice
    r; a last incomplete global batch is dropped so that every rank takes the same number of steps.
    """
    if size == 1:
        return [b for b in torch.split(order, batch_size) if len(b) >= 2]
    step = batch_size * size
    return [order[s + rank * batch_size:s + (rank + 1) * batch_size] for s in range(0, len(order) - step + 1, step)]


def batch_loss(net: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
               gen: torch.Generator, teachers: list | None = None, aux: torch.Tensor | None = None,
               aux_outputs: int = 0) -> torch.Tensor:
    """Loss of one (B, L) batch: cross-entropy on the labels (on the batch mixed with a shuffled
    copy of itself when cfg.mixup > 0), plus cfg.aux_weight times that of the aux_outputs last outputs
    on the auxiliary labels aux (B,) when given, blended with the teachers' soft targets when given.
    Labels -1 are ignored."""
    lam, perm = 1.0, None
    if cfg.mixup > 0:
        lam = float(torch.distributions.Beta(cfg.mixup, cfg.mixup).sample())
        perm = torch.randperm(len(x), generator=gen)
        x = lam * x + (1 - lam) * x[perm]
    out = net(x)
    if aux is not None:
        out, aux_out = out[:, :-aux_outputs], out[:, -aux_outputs:]
    hard = mixed_loss(loss_fn, out, y, lam, perm)
    if aux is not None:
        hard = hard + cfg.aux_weight * mixed_loss(AUX_LOSS, aux_out, aux, lam, perm)
    if not teachers:
        return hard
    t = cfg.distil_temperature
    with torch.no_grad():
        soft = torch.stack([torch.softmax(m(x) / t, dim=1) for m in teachers]).mean(dim=0)
    kl = torch.nn.functional.kl_div(torch.log_softmax(out / t, dim=1), soft, reduction="batchmean") * t * t
    return (1 - cfg.distil_weight) * hard + cfg.distil_weight * kl


AUX_LOSS = nn.CrossEntropyLoss(ignore_index=-1)


def count_aux_classes(aux: np.ndarray) -> int:
    """Outputs needed for auxiliary labels aux (N,; class index, -1 none): the highest index + 1, at least 2."""
    return max(int(np.max(aux, initial=-1)) + 1, 2)


def mixed_loss(loss_fn, out: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor | None) -> torch.Tensor:
    """loss_fn on outputs (B, K) of a batch mixed with weight lam with its permutation perm (None: not
    mixed), each part 0 (with a gradient) when it has no labelled window instead of 0/0."""
    def labelled(target: torch.Tensor) -> torch.Tensor:
        return loss_fn(out, target) if bool((target >= 0).any()) else out.sum() * 0.0

    if perm is None:
        return labelled(y)
    return lam * labelled(y) + (1 - lam) * labelled(y[perm])


def evaluate_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, n_classes: int) -> float:
    """loss_fn on the first n_classes outputs (any auxiliary ones after them are not judged)."""
    net.eval()
    with torch.inference_mode():
        return float(loss_fn(net(x)[:, :n_classes], y))


def keep_outputs(net: TripleInputCNN, n: int) -> None:
    """Drop all but the first n outputs of the network's output layer, in place."""
    layer = net.classifier
    kept = nn.Linear(layer.in_features, n)
    with torch.no_grad():
        kept.weight.copy_(layer.weight[:n])
        kept.bias.copy_(layer.bias[:n])
    net.classifier = kept


def transfer_features(source: nn.Module, target: nn.Module) -> None:
    """Copy every parameter and buffer except the output layer from source to target."""
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
    missing, unexpected = target.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise ValueError(f"cannot transfer weights: missing {missing}, unexpected {unexpected}")


def predict_proba(nets: list[nn.Module], x: np.ndarray) -> np.ndarray:
    """Mean softmax of the networks on windows x (N, L) mV -> (N, K)."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.inference_mode():
        return np.mean([torch.softmax(n.eval()(xt), dim=1).numpy() for n in nets], axis=0)


def fit_ensemble(x, y, n_classes, fs_hz, cfg: TrainConfig, seed: int, init: list | None = None,
                 progress=None, unlabelled: np.ndarray | None = None, aux: np.ndarray | None = None,
                 unlabelled_aux: np.ndarray | None = None) -> list[FitResult]:
    """cfg.members networks, member m seeded with seed * 1000 + m (and its own validation split).

    With cfg.distil (and members > 1) the members are teachers, and the result is the one student
    network distilled from them (see fit_distilled; `unlabelled` windows are used when
    cfg.distil_unlabelled). aux, unlabelled_aux: auxiliary labels of x and of `unlabelled`,
    learnt by the members when cfg.aux_weight > 0 (see with_auxiliary_cells).
    """
    if cfg.distilled:
        return [fit_distilled(x, y, n_classes, fs_hz, cfg, seed, init, progress, unlabelled=unlabelled, aux=aux,
                              unlabelled_aux=unlabelled_aux)[0]]
    tx, ty, taux = with_auxiliary_cells(x, y, aux, unlabelled, unlabelled_aux, cfg)
    fits = fit_members(tx, ty, n_classes, fs_hz, cfg, seed, init, progress, aux=taux)
    for fit in fits:
        adjust_logits(fit.model, y, n_classes, cfg.logit_adjust)
    return fits


def with_auxiliary_cells(x: np.ndarray, y: np.ndarray, aux: np.ndarray | None, extra: np.ndarray | None,
                         extra_aux: np.ndarray | None, cfg: TrainConfig) -> tuple:
    """(windows, labels, aux labels) the members of an ensemble train on: the labelled windows x (N, L)
    mV with labels y (N,) and, when cfg.aux_weight > 0, their auxiliary labels aux (N,) plus the
    `extra` windows (M, L) (cells outside the task) that have an auxiliary label in extra_aux (M,),
    with label -1; otherwise (x, y, None)."""
    if cfg.aux_weight <= 0 or aux is None:
        return x, y, None
    if extra is None or extra_aux is None:
        return x, y, aux
    keep = extra_aux >= 0
    return (np.concatenate([x, extra[keep]]), np.concatenate([y, np.full(int(keep.sum()), -1, dtype=y.dtype)]),
            np.concatenate([aux, extra_aux[keep]]))


def adjust_logits(net: TripleInputCNN, y: np.ndarray, n_classes: int, strength: float) -> None:
    """Lower the output bias of class k by strength * log(frequency of k in the labels y (N,)):
    post-hoc logit adjustment (Menon et al. 2021), in place; strength 0 leaves the network as it is."""
    if not strength:
        return
    shift = torch.tensor(strength * log_class_frequencies(y, n_classes), dtype=net.classifier.bias.dtype)
    with torch.no_grad():
        net.classifier.bias -= shift


def log_class_frequencies(y: np.ndarray, n_classes: int) -> np.ndarray:
    """(K,) log of each class's share of the labelled cells in y (N,; -1 = unlabelled); 0 for a class
    without cells, so that logit adjustment never promotes a class the network was not trained on."""
    counts = np.bincount(y[y >= 0], minlength=n_classes)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, np.log(counts / max(counts.sum(), 1)), 0.0)


def fit_members(x, y, n_classes, fs_hz, cfg: TrainConfig, seed: int, init: list | None = None,
                progress=None, aux: np.ndarray | None = None) -> list[FitResult]:
    """cfg.members networks, member m as fit_member makes it."""
    return [fit_member(x, y, n_classes, fs_hz, cfg, seed, m, init, progress, aux) for m in range(cfg.members)]


def fit_member(x, y, n_classes, fs_hz, cfg: TrainConfig, seed: int, member: int, init: list | None = None,
               progress=None, aux: np.ndarray | None = None) -> FitResult:
    """Member `member` of an ensemble: seeded with seed * 1000 + member (the same network whatever
    the ensemble's size), with its own options (cfg.member), started from init[member] if given;
    aux: auxiliary labels of x (see fit_network)."""
    return fit_network(x, y, n_classes, fs_hz, cfg.member(member), seed * 1000 + member,
                       init=init[member] if init else None,
                       progress=progress, aux=aux)


def fit_distilled(x, y, n_classes, fs_hz, cfg: TrainConfig, seed: int, init: list | None = None,
                  progress=None, teachers: list | None = None,
                  unlabelled: np.ndarray | None = None, aux: np.ndarray | None = None,
                  unlabelled_aux: np.ndarray | None = None) -> tuple[FitResult, list]:
    """(student, teacher networks): cfg.members teachers as in fit_ensemble (or the trained
    `teachers` given, e.g. from a cache), then one student (seeded with seed * 1000 + members; with
    cfg.student_channels channels, cfg.student_depth layers and cfg.student_epochs epochs if set)
    trained on the labels and the teachers' softened outputs, with cfg.distil_unlabelled also on
    the teachers' outputs for the unlabelled windows (M, L) mV; cfg.logit_adjust applies to the
    student only. aux, unlabelled_aux: auxiliary labels for the teachers (cfg.aux_weight)."""
    if teachers is None:
        tx, ty, taux = with_auxiliary_cells(x, y, aux, unlabelled, unlabelled_aux, cfg)
        teachers = [fit.model for fit in fit_members(tx, ty, n_classes, fs_hz, cfg, seed, init, progress, aux=taux)]
    student_cfg = cfg.student()
    start = init[0] if init and (student_cfg.channels, student_cfg.depth) == (cfg.channels, cfg.depth) else None
    student = fit_network(x, y, n_classes, fs_hz, student_cfg, seed * 1000 + cfg.members, init=start,
                          progress=progress, teachers=[t.eval() for t in teachers],
                          unlabelled=unlabelled if cfg.distil_unlabelled else None)
    adjust_logits(student.model, y, n_classes, cfg.logit_adjust)
    return student, teachers
