"""StyleGAN2 building blocks in plain PyTorch (Karras et al., CVPR 2020; paper §2.1).

Everything here is ordinary ``torch`` ops, so it runs on CPU for tests and under autocast /
``torch.compile`` on a GPU without a custom CUDA build:

* equalised learning rate: weights are stored N(0, 1) (divided by ``lr_mul``) and scaled at run
  time by ``lr_mul / sqrt(fan_in)`` (StyleGAN2 §B, "equalized learning rate");
* FIR resampling with the [1, 3, 3, 1] binomial filter as a depthwise convolution
  (:func:`upfirdn2d`), used for the upsampling convolution, the ToRGB skip path and the
  discriminator's downsampling;
* modulated / demodulated convolution (StyleGAN2 Eq. 1-3), as one grouped convolution per batch.

Activations are leaky ReLU (slope 0.2) times ``sqrt(2)`` so that the signal keeps unit variance.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LRELU_GAIN", "lrelu", "blur_filter", "upfirdn2d", "upsample2d", "downsample2d",
           "EqualLinear", "EqualConv2d", "modulated_conv2d"]

LRELU_GAIN = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (0.2) scaled by sqrt(2) to preserve the second moment."""
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


def blur_filter(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    """Separable 2-D FIR filter (k, k) from 1-D ``taps``, normalised to sum 1."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, *, up: int = 1, down: int = 1,
              pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter, downsample: x (B, C, H, W) -> (B, C, H', W').

    ``pad`` = (left, right, top, bottom), negative values crop. ``f`` (k, k) is applied as a
    depthwise convolution with ``gain`` (``up**2`` keeps the mean when upsampling by zero
    insertion). The filter is symmetric, so convolution and correlation coincide.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(p, 0) for p in pad])
    if min(pad) < 0:
        l, r, t, bt = (max(-p, 0) for p in pad)
        x = x[:, :, t:x.shape[2] - bt, l:x.shape[3] - r]
    k = (f * gain).to(dtype=x.dtype, device=x.device)
    x = F.conv2d(x, k[None, None].expand(c, 1, *k.shape), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling: (B, C, H, W) -> (B, C, 2H, 2W) (the ToRGB skip path)."""
    k = f.shape[0]
    p0, p1 = (k + 1) // 2, (k - 2) // 2
    return upfirdn2d(x, f, up=2, pad=(p0, p1, p0, p1), gain=4.0)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR downsampling: (B, C, H, W) -> (B, C, H/2, W/2) for even H, W."""
    k = f.shape[0]
    p0, p1 = (k - 1) // 2, (k - 2) // 2
    return upfirdn2d(x, f, down=2, pad=(p0, p1, p0, p1))


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate: y = x (s W)^T + lr_mul b.

    Weight stored N(0, 1/lr_mul^2), ``s = lr_mul / sqrt(in_features)``; the effective learning
    rate of every weight is then ``lr * lr_mul`` regardless of fan-in (mapping network: 0.01).
    """

    def __init__(self, in_features: int, out_features: int, *,
                 bias: bool = True,          # False: no bias term
                 bias_init: float = 0.0,     # 1.0 for style affines so styles start at 1
                 lr_mul: float = 1.0,        # 0.01 in the mapping network
                 activation: str = "linear"  # "linear" or "lrelu"
                 ):
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"EqualLinear activation: got {activation!r}, expected 'linear' or 'lrelu'")
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias * self.lr_mul if self.bias is not None else None
        x = F.linear(x, self.weight * self.weight_gain, b)
        return lrelu(x) if self.activation == "lrelu" else x


class EqualConv2d(nn.Module):
    """Plain (unmodulated) convolution with equalised lr, optional FIR 2x downsampling first.

    Used by the discriminator. With ``down=True`` the input is blurred then convolved with
    stride 2 (StyleGAN2's "blur before strided conv"); output (B, out, H/2, W/2).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 bias: bool = True,           # False on the residual skip path
                 activation: str = "linear",  # "linear" or "lrelu"
                 down: bool = False,          # True: FIR blur then stride-2 convolution
                 ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.activation = activation
        self.down = down
        self.kernel_size = kernel_size
        self.register_buffer("resample_filter", blur_filter(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        k = self.kernel_size
        if self.down:
            # blur so that (after the stride-2 conv) the output is exactly H/2 x W/2
            f = self.resample_filter
            p = (f.shape[0] - 2) + (k - 1)
            x = upfirdn2d(x, f, pad=((p + 1) // 2, p // 2, (p + 1) // 2, p // 2))
            x = F.conv2d(x, w.to(x.dtype), stride=2)
        else:
            x = F.conv2d(x, w.to(x.dtype), padding=k // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        return lrelu(x) if self.activation == "lrelu" else x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                     demodulate: bool = True, up: bool = False,
                     resample_filter: torch.Tensor | None = None,
                     fused: bool = True) -> torch.Tensor:
    """Modulated convolution (StyleGAN2 Eq. 1-3), x (B, I, H, W) -> (B, O, H', W').

    ``weight`` (O, I, k, k) already carries the equalised-lr gain; ``styles`` (B, I).
    w'_{ijk} = s_i w_{ijk} (Eq. 1); with ``demodulate``,
    w''_{ijk} = w'_{ijk} / sqrt(sum_{i,k} w'_{ijk}^2 + 1e-8) (Eq. 3), so every output channel
    has unit-norm weights per sample. ``up``: 2x upsampling as a stride-2 transposed convolution
    followed by the [1,3,3,1] blur (H' = 2H). ``fused``: one grouped convolution over the batch
    (groups = B); otherwise scale activations, convolve with the shared weight, rescale: the same
    result, sometimes faster for large batches.
    """
    b, i, h, w_ = x.shape
    o, i2, kh, kw = weight.shape
    if i != i2 or styles.shape != (b, i):
        raise ValueError(f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"styles {tuple(styles.shape)}; expected styles (B, I) = ({b}, {i2})")
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    dcoefs = None
    if demodulate:
        wsq = weight.float().square().sum(dim=[2, 3])                      # (O, I)
        dcoefs = (styles.float().square() @ wsq.t() + 1e-8).rsqrt().to(x.dtype)  # (B, O)
    if fused:
        wb = weight[None] * styles[:, None, :, None, None]                  # (B, O, I, k, k)
        if dcoefs is not None:
            wb = wb * dcoefs[:, :, None, None, None]
        x = x.reshape(1, b * i, h, w_)
        if up:
            # conv_transpose2d wants (in, out/groups, k, k) per group
            wt = wb.transpose(1, 2).reshape(b * i, o, kh, kw)
            x = F.conv_transpose2d(x, wt, stride=2, groups=b)
        else:
            x = F.conv2d(x, wb.reshape(b * o, i, kh, kw), padding=kh // 2, groups=b)
        x = x.reshape(b, o, *x.shape[2:])
    else:
        x = x * styles[:, :, None, None]
        if up:
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        else:
            x = F.conv2d(x, weight, padding=kh // 2)
        if dcoefs is not None:
            x = x * dcoefs[:, :, None, None]
    if up:
        # transposed conv gives (H-1)*2 + k; pad and blur with the FIR filter -> exactly 2H
        f = resample_filter if resample_filter is not None else blur_filter()
        fk = f.shape[0]
        p0 = kh // 2 + (fk + 1) // 2 - (kh - 1)
        p1 = kh // 2 + (fk - 2) // 2 - (kh - 2)
        x = upfirdn2d(x, f, pad=(p0, p1, p0, p1), gain=4.0)
    return x
