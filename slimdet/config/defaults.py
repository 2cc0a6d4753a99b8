"""Every config key of slimdet, with its default and what it means.

Configs are fvcore ``CfgNode`` trees: a YAML file may name a ``_BASE_`` file to inherit from and
then override keys; the command line overrides ``KEY VALUE`` pairs last. Keys that name a part
(``MODEL.METHOD``, ``MODEL.BACKBONE.NAME``, ``SOLVER.LR_SCHEDULER_NAME`` ...) name a class
registered in the matching registry.
"""
from .config import CfgNode as CN

_C = CN()
_C.VERSION = 1

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
# Registered name in METHOD_REGISTRY (slimdet/modeling/methods): MoCoV2, MoCoV3, SimCLR, Supervised,
# LinearProbe.
_C.MODEL.METHOD = "MoCoV2"
# "cpu", "cuda", or "" to pick cuda when available.
_C.MODEL.DEVICE = ""
# Checkpoint to initialise from: a slimdet checkpoint or a reference-implementation file
# (layouts in docs/checkpoints.md). Training loads every part the file has, all of the parts
# it never updates (a frozen probe backbone) or fails, and logs one line on what it left at
# initialisation; --eval-only needs MODEL.WEIGHTS and every weight evaluation reads.
_C.MODEL.WEIGHTS = ""
# MODEL.WEIGHTS is read without running code (tensors, numpy arrays, argparse namespaces only).
# True unpickles it fully: only for a file you trust that needs more (the error names the type).
_C.MODEL.WEIGHTS_TRUSTED = False
# Width multipliers of the slimmable network, full width first. [1.0] trains a plain network.
_C.MODEL.WIDTHS = [1.0, 0.75, 0.5, 0.25]
# Convert every BN to SyncBatchNorm when several processes train (MoCo v3, SimCLR recipes).
_C.MODEL.SYNC_BN = False
# Classes of a classification head (supervised training, linear probe, analyze_model).
_C.MODEL.NUM_CLASSES = 1000
# torch.compile the student's forward/backward (one graph per width, compiled at the width's
# first step) and the momentum encoder: "" (off, eager), "default" (inductor), "reduce-overhead"
# (inductor + CUDA graphs on a GPU), "max-autotune", "max-autotune-no-cudagraphs".
# Needs MODEL.SLIM.MODE fixed (sandwich widths change every step). Turns inductor's layout
# optimisation off for the process (it gave wrong gradients on weight slices). On a 2-core CPU
# a compiled ResNet-50 step was slower than eager (benchmarks/step_cost.py). See
# slimdet/modeling/slim/compile.py.
_C.MODEL.COMPILE = ""

_C.MODEL.BACKBONE = CN()
# Registered name in BACKBONE_REGISTRY.
_C.MODEL.BACKBONE.NAME = "SlimResNet"
# ResNet depth: 18 and 34 (basic blocks), 50, 101, 152 (bottlenecks).
_C.MODEL.BACKBONE.DEPTH = 50
# Channels of the stem at full width (64 for the standard ResNet; stage widths scale with it).
_C.MODEL.BACKBONE.BASE_CHANNELS = 64
# Input channels: 3 (images decoded as RGB; grey images repeated) or 1 (decoded grey; a data
# set is refused when any of 32 images spread over it holds colour; others are read as grey). INPUT.PIXEL_MEAN / PIXEL_STD give one value per
# channel. Never sliced.
_C.MODEL.BACKBONE.IN_CHANNELS = 3
# CIFAR stem for small images: 3x3 stride-1 conv and no max-pool instead of 7x7/2 + max-pool.
_C.MODEL.BACKBONE.CIFAR_STEM = False
# Zero-init the last BN gamma of every residual block (every width).
_C.MODEL.BACKBONE.ZERO_INIT_RESIDUAL = True
# Stage outputs to return ("res2".."res5") instead of the pooled feature; empty = pooled, the
# only value the methods of tools/train_net.py take (the detector sets its own,
# MODEL.RESNETS.OUT_FEATURES).
_C.MODEL.BACKBONE.OUT_FEATURES = []

# SlimCLR: how the widths are trained together (slimdet/modeling/slim).
_C.MODEL.SLIM = CN()
# Online distillation from the full width's (detached) logits to every sub-width.
_C.MODEL.SLIM.DISTILL = True
# Distillation temperature tau (docs/method.md §3: 5.0 on raw cosine logits for MoCo v2 / SimCLR, 1.0 for v3).
_C.MODEL.SLIM.DISTILL_TEMPERATURE = 5.0
# Sub-width loss = (1 - a) * task loss + a * distillation, a = DISTILL_WEIGHT.
_C.MODEL.SLIM.DISTILL_WEIGHT = 0.5
# Loss weights per width: "size" (full = 1 + sum of sub multipliers, subs = 1), "uniform" (all 1),
# "proportional" (w / sum w). See slimdet/modeling/slim/weights.py.
_C.MODEL.SLIM.LOSS_WEIGHTING = "size"
# Slow start: before this epoch only the full width trains (weight 1). 0 disables it. Widths that
# have not trained yet when an evaluation runs are left out of its results (with a warning).
_C.MODEL.SLIM.SLOW_START_EPOCH = 0
# Which widths train each step (slimdet/modeling/slim/loop.py): "fixed" (SlimCLR: every width
# of MODEL.WIDTHS) or "sandwich" (universally slimmable: the full width, the narrowest of
# MODEL.WIDTHS and NUM_SAMPLED widths drawn uniformly from WIDTH_RANGE, a new draw every step
# from (SEED, iteration)). Sandwich training leaves BN statistics that belong to no width: every
# evaluation width is calibrated first (TEST.CALIBRATE_BATCHES must be > 0).
_C.MODEL.SLIM.MODE = "fixed"
# Widths drawn per step in "sandwich" mode (besides the full and the narrowest width).
_C.MODEL.SLIM.NUM_SAMPLED = 2
# [low, high] range the "sandwich" widths are drawn from; [] = [min(MODEL.WIDTHS), 1.0]. Must lie
# within [min(MODEL.WIDTHS), 1.0].
_C.MODEL.SLIM.WIDTH_RANGE = []
# BN of the backbone: "switchable" (own affine parameters and statistics per width of
# MODEL.WIDTHS; a width between borrows the parameters of the nearest one at or above it) or
# "shared" (US-Nets' slimmable BN: one full-width affine weight and bias whose leading slice
# every width uses; statistics per width). Projection heads keep switchable BN. Checkpoints of
# the two differ (bn1.weight vs bn1.bn.0.weight): a job loading one needs the same value.
_C.MODEL.SLIM.BN = "switchable"

# MoCo v2 (slimdet/modeling/methods/moco_v2.py)
# Keys renamed since earlier releases: a config that still uses one fails with one line naming
# the new key (slimdet.config.config), never "unknown key" alone.
RENAMED_KEYS = {"MODEL.MOCO": "MODEL.MOCOV2"}
_C.MODEL.MOCOV2 = CN()
_C.MODEL.MOCOV2.DIM = 128
_C.MODEL.MOCOV2.HIDDEN_DIM = 2048
_C.MODEL.MOCOV2.QUEUE_SIZE = 65536
_C.MODEL.MOCOV2.MOMENTUM = 0.999
_C.MODEL.MOCOV2.TEMPERATURE = 0.2
# Shuffle-BN for the key encoder across processes (needs >1 process to have an effect). The
# permutation is a function of (SEED, iteration), so a resumed run draws the same ones.
_C.MODEL.MOCOV2.SHUFFLE_BN = True
# Fill the queue with real keys before training (small-data demos: a random queue made
# slimmable models collapse), from the batches of the iterations just before the first (-n to
# -1): other batches and augmentations than the first steps', whose positive keys would
# otherwise sit in the queue as negatives. A resumed run takes the queue from the checkpoint.
_C.MODEL.MOCOV2.PREFILL_QUEUE = False

# MoCo v3 (slimdet/modeling/methods/moco_v3.py)
_C.MODEL.MOCOV3 = CN()
_C.MODEL.MOCOV3.DIM = 256
_C.MODEL.MOCOV3.HIDDEN_DIM = 4096
_C.MODEL.MOCOV3.TEMPERATURE = 1.0
# Momentum at step 0; it follows a half-cosine to 1.0 at the end of training.
_C.MODEL.MOCOV3.MOMENTUM = 0.99

# SimCLR (slimdet/modeling/methods/simclr.py)
_C.MODEL.SIMCLR = CN()
_C.MODEL.SIMCLR.DIM = 128
_C.MODEL.SIMCLR.HIDDEN_DIM = 2048
_C.MODEL.SIMCLR.TEMPERATURE = 0.1

# Linear probe (slimdet/modeling/methods/linear_probe.py)
_C.MODEL.PROBE = CN()
# Keep the backbone in eval mode (each width uses its pre-training BN statistics).
_C.MODEL.PROBE.FREEZE_BACKBONE = True
# A BatchNorm without affine parameters on each width's features before its classifier (as in
# MAE's linear probe): features of any scale (a random-init backbone's too) train at the probe's
# LR. Exports fold it into the linear layer (LinearProbe.classifier_for).
_C.MODEL.PROBE.FEATURE_BN = False

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
# The training set (pre-training, supervised, probe; the kNN memory bank) and the test set. Either
# a registered name (slimdet/data/catalog.py: fashion_mnist_train/_test, imagenet_train/_val) or
# FORMAT:PATH for any data on disk: "folder:/data/mine/train" (PATH/<class>/<image>, classes in
# sorted order), "lmdb:/data/mine/train.lmdb" (datasets/prepare_lmdb.py) or
# "recordio:/data/mine/train.rec" (with train.idx beside it). Every split the run needs is
# checked when it starts.
_C.DATASETS.TRAIN = "imagenet_train"
_C.DATASETS.TEST = "imagenet_val"
# Root of imagenet_train / imagenet_val (ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG).
_C.DATASETS.ROOT = "datasets/imagenet"
# Storage format of imagenet_train / imagenet_val under ROOT: "folder" (ROOT/train/<class>/*),
# "lmdb" (ROOT/train.lmdb) or "recordio" (ROOT/train.rec + .idx). FORMAT:PATH names carry their own.
_C.DATASETS.FORMAT = "folder"
# Use only N images of the training / test set (0 = all), spread evenly over the classes: the
# first N // classes of every class and one more of each of the first N % classes classes (a
# class with too few gives what it has, the others make up the rest). Evaluations log the
# number of images they evaluate.
_C.DATASETS.TRAIN_SUBSET = 0
_C.DATASETS.TEST_SUBSET = 0

_C.DATALOADER = CN()
# "torch" (PyTorch DataLoader) or "dali" (NVIDIA DALI GPU pipelines, optional extra).
_C.DATALOADER.BACKEND = "torch"
_C.DATALOADER.NUM_WORKERS = 4
# Unreadable images: "skip" (count and name them) or "error".
_C.DATALOADER.ON_BAD_IMAGE = "skip"

_C.INPUT = CN()
# Augmentation recipe (a name in slimdet/data/recipes.py): MoCoV2, BYOL, SimCLR, LinearEval.
_C.INPUT.AUGMENTATION = "MoCoV2"
_C.INPUT.CROP_SIZE = 224
# RandomResizedCrop scale range.
_C.INPUT.MIN_SCALE = 0.2
_C.INPUT.MAX_SCALE = 1.0
# Per-channel normalisation (ImageNet statistics by default, in [0, 1] pixel units: values
# outside [0, 1], e.g. Detectron2's 0-255 MODEL.PIXEL_MEAN, are refused); one value per
# MODEL.BACKBONE.IN_CHANNELS.
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
# Evaluation view (every data source alike): resize the short side to TEST_RESIZE pixels, then
# centre-crop CROP_SIZE. 0 = floor(CROP_SIZE / TEST_CROP_FRACTION): 256 for a 224 crop (the
# ImageNet protocol), 36 for 32 px images. Else at least CROP_SIZE.
_C.INPUT.TEST_RESIZE = 0
# Share of the resized short side the evaluation crop keeps when TEST_RESIZE is 0, in (0, 1]
# (0.875 = 224 / 256; 1.0 = resize to CROP_SIZE, crop only the long side).
_C.INPUT.TEST_CROP_FRACTION = 0.875

# ---------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
# Registered optimizer name (slimdet/solver/build.py): SGD, LARS.
_C.SOLVER.OPTIMIZER = "SGD"
# Total batch size over all processes.
_C.SOLVER.IMS_PER_BATCH = 256
_C.SOLVER.EPOCHS = 200
# Run this many iterations instead of EPOCHS * iterations per epoch (0 = the full recipe). The run
# stays the same recipe, shortened (or stretched): every key counted in epochs (WARMUP_EPOCHS,
# STEPS, MODEL.SLIM.SLOW_START_EPOCH and the LR swap there, TEST.EVAL_PERIOD_EPOCHS, MoCo v3's
# momentum schedule) is scaled by MAX_ITER / (EPOCHS * iterations per epoch), so epoch e of the
# recipe falls at the same fraction e / EPOCHS of the run (slimdet/solver/clock.py).
_C.SOLVER.MAX_ITER = 0
_C.SOLVER.BASE_LR = 0.03
# If > 0 the learning rate is BASE_LR * IMS_PER_BATCH / REFERENCE_BATCH_SIZE (linear scaling).
_C.SOLVER.REFERENCE_BATCH_SIZE = 0
# Registered scheduler name (slimdet/solver/lr_scheduler.py; formulas in docs/schedules.md):
# WarmupCosine (linear warm-up, then a half cosine over the iterations after the warm-up) or
# WarmupMultiStep (linear warm-up, then x GAMMA at each epoch of STEPS). Evaluated per iteration.
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupCosine"
# Linear warm-up from 0 to the base LR over this many epochs (may be fractional: MoCo v3's is
# 0.033 x 300 = 9.9); must be shorter than EPOCHS.
_C.SOLVER.WARMUP_EPOCHS = 0.0
# Epochs at which WarmupMultiStep multiplies the LR by GAMMA (each inside (0, EPOCHS)).
_C.SOLVER.STEPS = []
_C.SOLVER.GAMMA = 0.1
# If > 0: from MODEL.SLIM.SLOW_START_EPOCH on, the schedule's base LR is replaced by this value
# (scaled by REFERENCE_BATCH_SIZE like BASE_LR) while the schedule keeps running, as the
# reference does at its slow start (docs/schedules.md). 0 = keep BASE_LR.
_C.SOLVER.BASE_LR_AFTER_SLOW_START = 0.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 1e-4
# Weight decay of BN parameters and biases (the reference code decays them; docs/method.md §4 says none
# for LARS). SGD recipes keep MoCo's behaviour by setting it equal to WEIGHT_DECAY.
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0
# LARS trust coefficient; BN and bias parameters get no trust ratio.
_C.SOLVER.LARS_TRUST_COEF = 1e-3
# Save a checkpoint every N iterations (0 = once per epoch).
_C.SOLVER.CHECKPOINT_PERIOD = 0
# Keep at most N periodic checkpoints (0 = all).
_C.SOLVER.MAX_TO_KEEP = 2
_C.SOLVER.AMP = CN()
# Mixed precision (fp16 + GradScaler on CUDA; bf16 autocast on a CPU with native bf16, i.e.
# AVX512-BF16 or AMX; on other CPUs bf16 runs ~10x slower than fp32, so training stays fp32
# and the log says so).
_C.SOLVER.AMP.ENABLED = False
# Clip the gradient norm (0 = off).
_C.SOLVER.CLIP_GRAD_NORM = 0.0

# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
# Registered evaluator names (slimdet/evaluation) run by the evaluation hook and --eval-only.
_C.TEST.EVALUATORS = ["KNNEvaluator"]
# Run the evaluators every N iterations during training (0 = only at the end).
_C.TEST.EVAL_PERIOD = 0
# Run them every N epochs instead, when EVAL_PERIOD is 0 (0 = only at the end; scaled under
# SOLVER.MAX_ITER like every epoch key). The reference probe evaluates every 2 epochs.
_C.TEST.EVAL_PERIOD_EPOCHS = 0.0
# Also report the best periodic evaluation: the one whose full-width value of this metric is
# highest (e.g. "top1": the reference probe's best full-width top-1), each of its per-width
# results as "<metric>_best/w<width>" beside the last evaluation's "<metric>/w<width>", and its
# iteration as "best_iter" (metrics.json, the final table). "" = last evaluation only. A
# metric none of TEST.EVALUATORS reports (kNN's is "knn_top1") is refused at the start.
_C.TEST.BEST_METRIC = ""
_C.TEST.IMS_PER_BATCH = 256
_C.TEST.KNN = CN()
_C.TEST.KNN.K = 200
_C.TEST.KNN.TEMPERATURE = 0.1
# Widths to evaluate (kNN, classification; the linear probe trains one classifier per width):
# [] = MODEL.WIDTHS. Any width in [min(MODEL.WIDTHS), 1.0] (channels int(c * w)); a width the
# network was not trained at borrows the BN parameters of the nearest trained width at or above
# it and gets its BN statistics estimated on TEST.CALIBRATE_BATCHES training batches.
_C.TEST.WIDTHS = []
# Training batches (the training augmentation's first view; the same whole SOLVER.IMS_PER_BATCH
# batches every time, in every process, whatever --num-gpus) on which BN statistics are
# estimated for widths that have none: untrained TEST.WIDTHS, and every width after
# MODEL.SLIM.MODE "sandwich" training (fvcore's precise BN). 0 = never calibrate: such widths
# are then a config error.
_C.TEST.CALIBRATE_BATCHES = 0

# ---------------------------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------------------------
_C.OUTPUT_DIR = "./output"
# Seed of everything random (data order, augmentation, init). Negative: one drawn at start (the
# same for every process), logged and written to OUTPUT_DIR/config.yaml.
_C.SEED = 0
# Print metrics every N iterations.
_C.LOG_PERIOD = 20
# Gradient diagnostics (per-width gradient norms and agreement) every N iterations (0 = off).
_C.ANALYSIS = CN()
_C.ANALYSIS.GRAD_PERIOD = 0
# Save weights along training for loss-landscape trajectories every N iterations (0 = off).
_C.ANALYSIS.TRAJECTORY_PERIOD = 0
