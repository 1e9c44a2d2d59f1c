"""A prompt's image tokens in the two-way transformer, kept as the shared image plus a few per-prompt factors.

After the first image -> token attention every prompt has its own image tokens (4096 x 256 at 64x64), but they
differ from the shared image tokens X0 only by few terms: the attention adds to each image token a mix of the
prompt's (heads x tokens) value vectors pushed through the fixed output projection, and a layer norm rescales each
row and maps the columns by a fixed matrix (centring, gain) and adds a fixed row. So, exactly,

    X = diag(s) X0 G + sum_r coef_r rows_r,

with s (N) a per-token scale, G (C, C) a fixed matrix, and R terms whose coefficients coef_r (N) and rows_r (C)
are per prompt (R = heads x tokens + 2 per layer). Any product with a fixed weight W costs X0 (G W) once per
image (cached) and N x R per prompt instead of N x C, and the layer norms come from the factors: a row's centred
squared norm is s^2 |X0 G P|^2 + 2 s <X0 G P, rows> coef + coef' (rows P rows') coef (P: centring), whose cross
terms are cheap because each layer's rows are the prompt's value vectors times that layer's fixed projection, so
X0 G P times that projection is cached per image too. Same arithmetic up to rounding order; about a third of the
per-prompt work of the materialised tokens and no pass over N x C per layer.

Values here are for one shared image and B prompts; everything weight- or image-only goes in an `ImageCache`
kept for the last image by the transformer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch import nn


class ImageCache:
    """Products of one image's tokens X0 (N, C) with fixed (weight-only) matrices, and those matrices, by name.

    `image_keys` lists, in the order first asked for, the entries the transformer reads that depend on X0 (not
    those only used to make others): given them as `values`, a cache without X0 (`x0=None`, its `shape`, `dtype`
    and `device` given) serves the same forward, which is how the browser decoder is split into a per-image part
    and a per-click part (samflow.export.decoder).
    """

    def __init__(self, x0: torch.Tensor | None, values: dict[Hashable, torch.Tensor] | None = None, *,
                 shape: tuple[int, int] | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> None:
        self._x0 = x0
        self.shape = tuple(x0.shape) if x0 is not None else tuple(shape)
        self.dtype = x0.dtype if x0 is not None else dtype
        self.device = x0.device if x0 is not None else device
        self._values: dict[Hashable, torch.Tensor] = dict(values or {})
        self.image_keys: list[Hashable] = []
        self._listed: set[Hashable] = set()
        self._from_image: set[Hashable] = set(self._values)  # given values are the image's products
        self._depth = 0
        self._read_x0 = False

    @property
    def x0(self) -> torch.Tensor:
        if self._x0 is None:
            raise KeyError("this image cache holds the image's products only, not its tokens")
        self._read_x0 = True
        return self._x0

    def get(self, name: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        value = self._values.get(name)
        if value is None:
            outer = self._read_x0
            self._read_x0 = False
            self._depth += 1
            try:
                value = self._values[name] = compute()
            finally:
                self._depth -= 1
            if self._read_x0:
                self._from_image.add(name)
            self._read_x0 = outer or self._read_x0
        elif name in self._from_image:
            self._read_x0 = True  # whatever is made from it depends on the image too
        if self._depth == 0 and name in self._from_image and name not in self._listed:
            self._listed.add(name)
            self.image_keys.append(name)
        return value

    def value(self, name: Hashable) -> torch.Tensor:
        return self._values[name]


class _Block:
    """Terms whose rows are `vals @ basis` (value vectors (B, H, T, d) through a fixed (H, d, C) projection), or
    one fixed row `basis` (1, C) when vals is None. Their coefficients are rows [start, stop) of the coefficients."""

    __slots__ = ("vals", "basis", "name", "start", "stop")

    def __init__(self, vals: torch.Tensor | None, basis: torch.Tensor, name: Hashable, start: int, stop: int) -> None:
        self.vals, self.basis, self.name, self.start, self.stop = vals, basis, name, start, stop

    def rows(self, batch: int) -> torch.Tensor:
        """(B, K, C) explicit rows."""
        if self.vals is None:
            return self.basis.expand(batch, *self.basis.shape)
        return torch.matmul(self.vals, self.basis).reshape(batch, -1, self.basis.shape[-1])


class FactoredImageTokens:
    """Image tokens (B, N, C) of B prompts over one image, as diag(s) X0 G + coef^T rows (see the module doc)."""

    def __init__(self, cache: ImageCache, batch: int, capacity: int) -> None:
        """`capacity`: the most terms the tokens will get (their coefficients are kept in one buffer)."""
        self.cache = cache
        self.batch = batch
        self.scale: torch.Tensor | None = None  # (B, N); None: all ones
        self.g: torch.Tensor | None = None  # (C, C); None: the identity
        self.g_name: Hashable = "I"
        if torch.jit.is_tracing():
            self._buffer = self.coef = torch.zeros(batch, 0, cache.shape[0], dtype=cache.dtype, device=cache.device)
        else:
            self._buffer = torch.empty(batch, capacity, cache.shape[0], dtype=cache.dtype, device=cache.device)
            self.coef = self._buffer[:, :0]  # (B, R, N)
        self.blocks: list[_Block] = []

    def _append(self, coef: torch.Tensor | None, k: int) -> tuple[int, int]:
        """Room for k more terms, their coefficients `coef` (B, k, N) or ones: their (start, stop)."""
        start = self.coef.shape[1]
        stop = start + k
        if torch.jit.is_tracing():  # an exported graph: no writes into a preallocated buffer
            b, n = self.batch, self.cache.shape[0]
            new = torch.ones(b, k, n, dtype=self.dtype, device=self.device) if coef is None else coef
            self.coef = torch.cat([self.coef, new], dim=1)
            return start, stop
        if stop > self._buffer.shape[1]:
            raise RuntimeError(f"factored image tokens: {stop} terms exceed the capacity {self._buffer.shape[1]}")
        if coef is None:
            self._buffer[:, start:stop].fill_(1.0)
        else:
            self._buffer[:, start:stop].copy_(coef)
        self.coef = self._buffer[:, :stop]
        return start, stop

    @property
    def device(self) -> torch.device:
        return self.cache.device

    @property
    def dtype(self) -> torch.dtype:
        return self.cache.dtype

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.batch, *self.cache.shape))

    # -- fixed products, cached per image ------------------------------------------------------------------------

    def _x0_times(self, name: Hashable, right: Callable[[], torch.Tensor]) -> torch.Tensor:
        """X0 G right() (N, K), cached under (G, name)."""
        def compute() -> torch.Tensor:
            r = right()
            return torch.matmul(self.cache.x0, r if self.g is None else torch.matmul(self.g, r))
        return self.cache.get(("x0", self.g_name, name), compute)

    def _heads_dn(self, name: Hashable, weight: torch.Tensor, heads: int,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
        """(X0 G W^T [+ bias]) laid out (H, d, N) for scores against per-head vectors; bias (N, Ci) is folded in
        only while s is all ones (the first layer)."""
        def compute() -> torch.Tensor:
            m = self._x0_times(("w", name), lambda: weight.t())
            if bias is not None:
                m = m + bias
            n = m.shape[0]
            return m.t().reshape(heads, -1, n).contiguous()
        return self.cache.get(("dn", self.g_name, name, bias is not None), compute)

    def _heads_nd(self, name: Hashable, weight: torch.Tensor, heads: int) -> torch.Tensor:
        """X0 G W^T laid out (H, N, d), for mixing over N."""
        def compute() -> torch.Tensor:
            m = self._x0_times(("w", name), lambda: weight.t())
            n = m.shape[0]
            return m.view(n, heads, -1).permute(1, 0, 2).contiguous()
        return self.cache.get(("nd", self.g_name, name), compute)

    def _rows_times(self, name: Hashable, right: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Every term's row times right() (C, K): (B, R, K), from the value vectors and each block's basis @ right(),
        cached under (block, name)."""
        parts = []
        for block in self.blocks:
            basis_r = self.cache.get(("rows", block.name, name), lambda blk=block: torch.matmul(blk.basis, right()))
            if block.vals is None:
                parts.append(basis_r.expand(self.batch, *basis_r.shape))
            else:
                parts.append(torch.matmul(block.vals, basis_r).reshape(self.batch, -1, basis_r.shape[-1]))
        return torch.cat(parts, dim=1)

    def _projected_rows(self, name: Hashable, weight: torch.Tensor) -> torch.Tensor:
        """Every term's row through W (Ci, C): (B, R, Ci)."""
        return self._rows_times(("w", name), lambda: weight.t())

    # -- attention against the image tokens ----------------------------------------------------------------------

    def scores(self, vectors: torch.Tensor, weight: torch.Tensor, position_bias: torch.Tensor,
               name: Hashable) -> torch.Tensor:
        """vectors (B, H, T, d) dotted with each head's slice of (X + pe) W^T + b, given as `weight` (Ci, C) and
        `position_bias` (N, Ci) = pe W^T + b: (B, H, T, N)."""
        # Sizes as Python ints (constants in an exported graph) and -1 for the prompt's token count T.
        b, h, d = self.batch, int(vectors.shape[1]), int(vectors.shape[3])
        n = self.cache.shape[0]
        if self.scale is None and not self.blocks:
            return _per_head(vectors, self._heads_dn(name, weight, h, position_bias))
        bias = self.cache.get(("pb", name), lambda: position_bias.t().reshape(h, -1, position_bias.shape[0])
                              .contiguous())
        out = _per_head(vectors, bias)
        image = _per_head(vectors, self._heads_dn(name, weight, h))
        if self.scale is None:
            out = out.add_(image)
        else:
            out = out.addcmul_(image, self.scale[:, None, None, :])
        if self.blocks:
            rows = self._projected_rows(name, weight)  # (B, R, Ci)
            small = torch.matmul(vectors, rows.view(b, -1, h, d).permute(0, 2, 3, 1))  # (B, H, T, R)
            out = out.view(b, -1, n).baddbmm_(small.reshape(b, -1, rows.shape[1]), self.coef).view(b, h, -1, n)
        return out

    def mix(self, probs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            name: Hashable) -> torch.Tensor:
        """probs (B, H, T, N) (each row summing to one) times each head's slice of X W^T + b: (B, H, T, d)."""
        b, h, n = self.batch, int(probs.shape[1]), self.cache.shape[0]
        weighted = probs if self.scale is None else probs * self.scale[:, None, None, :]
        out = _per_head(weighted, self._heads_nd(name, weight, h))
        if self.blocks:
            rows = self._projected_rows(name, weight)  # (B, R, Ci)
            r = rows.shape[1]
            pc = torch.bmm(probs.reshape(b, -1, n), self.coef.transpose(1, 2)).view(b, h, -1, r)  # (B, H, T, R)
            out = out + torch.matmul(pc, rows.view(b, r, h, -1).transpose(1, 2))
        if bias is not None:
            out = out + bias.view(h, 1, -1)
        return out

    # -- updates --------------------------------------------------------------------------------------------------

    def add_attention(self, probs: torch.Tensor, values: torch.Tensor, out_proj: nn.Linear, name: Hashable) -> None:
        """X += out_proj(sum_t probs[..., t, n] values[t]) for every image token n: probs (B, H, T, N) summing to
        one over T per head, values (B, H, T, d).

        As each head's probabilities sum to one, sum_t p_t v_t = v_last + sum_{t<last} p_t (v_t - v_last): the last
        token's values of all heads, through the projection, plus its bias, become one term with coefficient one,
        and each head keeps T - 1 terms (H (T - 1) + 1 instead of H T + 1: less work for everything after).
        """
        b, h, n = self.batch, int(probs.shape[1]), self.cache.shape[0]
        c = out_proj.out_features
        basis = self.cache.get(("wo", name), lambda: out_proj.weight.t().reshape(h, -1, c).contiguous())
        coef = probs[:, :, :-1].reshape(b, -1, n)
        last = values[:, :, -1:]  # (B, H, 1, d)
        self.blocks.append(_Block(values[:, :, :-1] - last, basis, ("wo", name), *self._append(coef, coef.shape[1])))

        def last_basis() -> torch.Tensor:  # (1, Ci [+ 1], C): the whole output projection [and its bias]
            rows = [out_proj.weight.t()] + ([out_proj.bias.view(1, c)] if out_proj.bias is not None else [])
            return torch.cat(rows).unsqueeze(0)
        last = last.reshape(b, 1, 1, -1)
        if out_proj.bias is not None:
            last = torch.cat([last, last.new_ones(b, 1, 1, 1)], dim=-1)
        self.blocks.append(_Block(last, self.cache.get(("wo_last", name), last_basis), ("wo_last", name),
                                  *self._append(None, 1)))

    def layer_norm(self, norm: nn.LayerNorm, name: Hashable) -> None:
        """X = norm(X) over C, computed from the factors."""
        b = self.batch
        c = self.cache.shape[1]
        g_name = self.g_name
        g_centred = self.cache.get(("gP", g_name), lambda: _centre_rows(self.g, c, self.cache))
        e0 = self.cache.get(("e0", g_name), lambda: torch.matmul(self.cache.x0, g_centred).square_().sum(-1))
        s = self.scale
        total = e0.expand(b, self.cache.shape[0]) if s is None else e0 * s.square()
        if self.blocks:
            rows = torch.cat([blk.rows(b) for blk in self.blocks], dim=1)  # (B, R, C)
            rows_c = rows - rows.mean(-1, keepdim=True)
            gram = torch.bmm(rows_c, rows_c.transpose(1, 2))  # (B, R, R)
            quadratic = torch.bmm(gram, self.coef).mul_(self.coef).sum(1)  # coef' gram coef, (B, N)
            cross = sum(self._cross(blk, g_centred) for blk in self.blocks)  # <X0 G P, rows> coef, (B, N)
            total = total + quadratic + cross.mul_(2.0 if s is None else 2.0 * s)
        rstd = (total / c + norm.eps).rsqrt_()
        self.scale = rstd if s is None else s * rstd
        gamma, beta = norm.weight, norm.bias
        new_g_name = (g_name, name)
        self.g = self.cache.get(("G", new_g_name), lambda: g_centred * gamma)
        self.g_name = new_g_name
        self.coef = self.coef * rstd[:, None, :] if torch.jit.is_tracing() else self.coef.mul_(rstd[:, None, :])
        for blk in self.blocks:
            old, new = blk.basis, (blk.name, name)
            blk.basis = self.cache.get(("basis", new), lambda o=old: (o - o.mean(-1, keepdim=True)) * gamma)
            blk.name = new
        self.blocks.append(_Block(None, self.cache.get(("beta", name), lambda: beta.view(1, c)), ("beta", name),
                                  *self._append(None, 1)))

    def _cross(self, blk: _Block, g_centred: torch.Tensor) -> torch.Tensor:
        """sum over one block's terms of coef * (X0 G P row^T): (B, N), through the cached X0 G P basis^T."""
        coef = self.coef[:, blk.start : blk.stop]
        if blk.vals is None:
            m = self.cache.get(("cross", self.g_name, blk.name),
                               lambda: torch.matmul(self.cache.x0, torch.matmul(g_centred, blk.basis[0])))
            return coef[:, 0] * m
        b, h, d = self.batch, int(blk.vals.shape[1]), int(blk.vals.shape[3])

        def compute() -> torch.Tensor:  # (H, d, N)
            basis_t = blk.basis.permute(2, 0, 1).reshape(blk.basis.shape[2], h * d)  # (C, H*d)
            m = torch.matmul(self.cache.x0, torch.matmul(g_centred, basis_t))  # (N, H*d)
            return m.t().reshape(h, d, -1).contiguous()
        m = self.cache.get(("cross", self.g_name, blk.name), compute)
        return _per_head(blk.vals, m).mul_(coef.view(b, h, -1, self.cache.shape[0])).sum((1, 2))

    # -- dense results --------------------------------------------------------------------------------------------

    def linear(self, weight_t: torch.Tensor, name: Hashable) -> Callable[[slice], torch.Tensor]:
        """rows -> X[:, rows] @ weight_t (C, K), (B, m, K); the per-prompt rows' products are made once."""
        fixed = self._x0_times(("lin", name), lambda: weight_t)
        s = self.scale
        projected = self._rows_times(("lin", name), lambda: weight_t) if self.blocks else None  # (B, R, K)
        coef = self.coef
        if projected is not None and torch.jit.is_tracing():
            # onnxruntime-web's GEMM ran 4096 x R x 256 at 40-51 GFLOP/s for R = 116 and 112, at 70 for 128:
            # pad R to a multiple of 32 with zero terms.
            pad = (32 - coef.shape[1] % 32) % 32
            coef = torch.cat([coef, coef.new_zeros(self.batch, pad, coef.shape[2])], dim=1)
            projected = torch.cat([projected, projected.new_zeros(self.batch, pad, projected.shape[2])], dim=1)
        coef_t = coef.transpose(1, 2)  # (B, N, R)

        def rows_of(rows: slice) -> torch.Tensor:
            part = fixed[rows]
            out = part.expand(self.batch, *part.shape) if s is None else part * s[:, rows, None]
            if projected is None:
                return out.contiguous()
            return torch.baddbmm(out, coef_t[:, rows], projected)
        return rows_of

    def dense(self) -> torch.Tensor:
        """The tokens themselves, (B, N, C)."""
        c = self.cache.shape[1]
        eye = self.cache.get("eye", lambda: torch.eye(c, dtype=self.cache.dtype, device=self.cache.device))
        return self.linear(eye, "identity")(slice(None))

    def select(self, index: torch.Tensor) -> FactoredImageTokens:
        """The tokens of prompts `index` (n,)."""
        return self._remade(lambda get: get(self)[index])

    def _remade(self, tensor: Callable[[Callable[[FactoredImageTokens], torch.Tensor]], torch.Tensor]
                ) -> FactoredImageTokens:
        """These tokens (their image and structure) with each per-prompt tensor (scale, coefficients, value
        vectors) made anew: `tensor(get)` from the accessor `get` that reads it from a FactoredImageTokens."""
        out = FactoredImageTokens.__new__(FactoredImageTokens)
        out.cache, out.g, out.g_name = self.cache, self.g, self.g_name
        out.scale = None if self.scale is None else tensor(lambda p: p.scale)
        out.coef = out._buffer = tensor(lambda p: p.coef)
        out.batch = int(out.coef.shape[0])
        out.blocks = [_Block(None if blk.vals is None else tensor(lambda p, i=i: p.blocks[i].vals), blk.basis,
                             blk.name, blk.start, blk.stop) for i, blk in enumerate(self.blocks)]
        return out


def cat_factored(parts: list[FactoredImageTokens]) -> FactoredImageTokens:
    """The tokens of several prompt batches over the same image (made by the same transformer), as one batch."""
    if len(parts) == 1:
        return parts[0]
    return parts[0]._remade(lambda get: torch.cat([get(p) for p in parts]))


def _per_head(vectors: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """vectors (B, H, T, K) times each head's m (H, K, N): (B, H, T, N) (a broadcast matmul would copy m once
    per prompt)."""
    b = int(vectors.shape[0])
    if b == 1:
        return torch.matmul(vectors[0], m)[None]
    # (einsum is faster alone but leaves a (H, B, T, N) layout that makes the elementwise work after it slower)
    out = vectors.new_empty(b, *vectors.shape[1:3], m.shape[-1])
    for i in range(b):  # each prompt's (H, T, N) straight into its place
        torch.bmm(vectors[i], m, out=out[i])
    return out


def _centre_rows(g: torch.Tensor | None, c: int, like: ImageCache) -> torch.Tensor:
    """G P, P = I - 11^T / C (each row of G minus its mean); G None is the identity."""
    if g is None:
        g = torch.eye(c, dtype=like.dtype, device=like.device)
    return g - g.mean(-1, keepdim=True)
