"""The two Triton kernels of the token-level wave operator (wavefield_core/triton_scan.py holds the
autograd Function and the API around them).

Forward kernel (one program per (batch * head, block of BD channels)):
  the program walks the sequence in chunks of BT tokens, in order, keeping the complex state h of
  its BD channels in registers (two fp32 vectors). Per chunk:
    y = T @ u + Re(c r**(i+1) h_prev)      T: the BT x BT lower-triangular Toeplitz of K (tl.dot)
    h = r**BT h_prev + sum_j r**(BT-1-j) u[j]
  T and every other coefficient depend only on a lag inside a chunk, so each program gathers them
  once from a small per-head table (r**m, c r**m, m r**(m-1) for m = 0..BT, computed in float64 on
  the host and rounded once to fp32) and reuses them for every chunk. The deposit scale is
  multiplied into v as it is loaded: u never exists in memory. Nothing is saved for backward but
  v and scale.

Backward kernel: the adjoint is the same recurrence run backwards,
    Bk[j] = sum_{n >= j} r**(n-j) g[n] = g[j] + r Bk[j+1],   dL/du[j] = Re(c Bk[j]),
walked in chunks from the end, with T's transpose for the intra-chunk part. The parameter
gradients are reductions that need no forward state at all (so the forward stores nothing):
    dL/dc (holomorphic) = sum_n g[n] h[n]          = sum_j u[j] Bk[j]
    dL/dr (holomorphic) = c sum_{j < n} (n-j) r**(n-j-1) u[j] g[n] = c sum_j u[j] D[j],
    D[j] = sum_{n > j} (n-j) r**(n-j-1) g[n],
with D carried across chunks next to Bk (D[t0] = BT r**(BT-1) Bk[t1] + r**BT D[t1] + in-chunk
terms, t1 = t0 + BT). Inside a chunk both sums weight u[j] g[i] by a function of the lag i - j
only, so the kernel accumulates the chunk Gram matrices sum_e g[i, e] u[j, e] over all chunks
(one tl.dot each) and applies the lag weights once at the end. y = Re(f) with f holomorphic in
c and r, so dL/dRe(c) = Re(.), dL/dIm(c) = -Im(.), and the same for r; autograd carries them on
to frequency, damping and phase through pole_and_gain.

Memory: forward writes y only; backward writes dv, plus an fp32 (B, H, N) buffer per block of
channels for dL/dscale and 4 fp32 numbers per program for the parameters. No (B, H, N, d) fp32
intermediate exists. Parallelism is (batch * heads) x ceil(d / BD) programs, each sequential over
N / BT chunks (sizes in _config).

Precision: all accumulation is fp32. tl.dot inputs are cast to the input dtype (bf16 / fp16 use
the tensor cores; fp32 inputs run the dot in full fp32, "ieee", not TF32). States, carries and the
per-channel reductions stay fp32 elementwise. The result is stored in the input dtype.

triton is imported, and the kernels defined, on first use (_kernels): importing triton decides once
per process whether @triton.jit compiles or interprets (TRITON_INTERPRET), and machines without
triton must still import the package.
"""
from __future__ import annotations

import os

import torch

triton = None
tl = None
_KERNELS = None  # (forward, backward) once defined
# Whether the kernels were defined for triton's interpreter: @triton.jit decides this when it runs,
# from TRITON_INTERPRET, so it is fixed by the first use in a process.
_INTERPRETED = False
_program_tile = _decay_add = _wave_fwd_kernel = _wave_bwd_kernel = None  # bound by _define_kernels


def _import_triton() -> str | None:
    """Import triton into this module's globals; None on success, else why not."""
    global triton, tl
    if triton is None:
        try:
            import triton as _triton
            import triton.language as _tl
        except ImportError as exc:  # depends on the machine
            return f"triton does not import here ({exc}); it ships with CUDA builds of torch"
        triton, tl = _triton, _tl
    return None


def _interpreting() -> bool:
    return _INTERPRETED if _KERNELS is not None else os.environ.get("TRITON_INTERPRET", "0") == "1"


def _kernels():
    """The two kernels, defined on first use (see _INTERPRETED)."""
    global _KERNELS, _INTERPRETED
    if _KERNELS is None:
        why = _import_triton()
        if why is not None:
            raise RuntimeError(why)
        _INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
        _KERNELS = _define_kernels()
    return _KERNELS


def _define_kernels():
    """Define the kernels (module globals, where triton looks names up)."""
    global _program_tile, _decay_add, _wave_fwd_kernel, _wave_bwd_kernel

    @triton.jit
    def _program_tile(H, D, BT: tl.constexpr, BD: tl.constexpr):
        """This program's batch b (int64), head h, token offsets in a chunk, and its channel block
        (offsets, mask, int64 offsets): the grid is (batch * heads, ceil(D / BD))."""
        pid_bh = tl.program_id(0)
        pid_d = tl.program_id(1)
        offs_d = pid_d * BD + tl.arange(0, BD)
        return (pid_bh, pid_d, (pid_bh // H).to(tl.int64), pid_bh % H, tl.arange(0, BT), offs_d, offs_d < D,
                offs_d.to(tl.int64))

    @triton.jit
    def _decay_add(a_re, a_im, h_re, h_im, s_re, s_im):
        """The complex state carried across one chunk: a * h + s (a = r**BT, s: the chunk's own part)."""
        return a_re * h_re - a_im * h_im + s_re, a_re * h_im + a_im * h_re + s_im

    # t_ptr: per head, 6 rows of BT + 1 values at m = 0..BT (see _tables):
    #   rows 0, 1: Re, Im r**m;  rows 2, 3: Re, Im c r**m;  rows 4, 5: Re, Im m r**(m-1).
    @triton.jit
    def _wave_fwd_kernel(
        v_ptr, s_ptr, y_ptr, t_ptr,
        H, N, D,
        svb, svh, svn, svd,
        ssb, ssh, ssn,
        syb, syh, syn, syd,
        HAS_SCALE: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
        OP_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    ):
        pid_bh, pid_d, b, h, it, offs_d, mask_d, od = _program_tile(H, D, BT, BD)
        tab = t_ptr + h * (6 * (BT + 1))

        # Chunk-invariant coefficients, gathered once from the table.
        lag = it[:, None] - it[None, :]  # output token i (rows) minus input token j (columns)
        kmat = tl.where(lag >= 0, tl.load(tab + 2 * (BT + 1) + tl.maximum(lag, 0)), 0.0)  # Re(c r**(i-j))
        kmat = kmat.to(OP_DTYPE).to(DOT_DTYPE)
        cin_re = tl.load(tab + 2 * (BT + 1) + it + 1)  # carry-in: c r**(i+1)
        cin_im = tl.load(tab + 3 * (BT + 1) + it + 1)
        w_re = tl.load(tab + (BT - 1 - it))  # deposit into the state: r**(BT-1-j)
        w_im = tl.load(tab + (BT + 1) + (BT - 1 - it))
        aT_re = tl.load(tab + BT)  # decay across one chunk: r**BT
        aT_im = tl.load(tab + (BT + 1) + BT)

        v_base = v_ptr + b * svb + h.to(tl.int64) * svh
        y_base = y_ptr + b * syb + h.to(tl.int64) * syh
        s_base = s_ptr + b * ssb + h.to(tl.int64) * ssh

        h_re = tl.zeros([BD], dtype=tl.float32)
        h_im = tl.zeros([BD], dtype=tl.float32)
        for t0 in range(0, N, BT):
            offs_t = t0 + it
            mask_t = offs_t < N
            ot = offs_t.to(tl.int64)
            m2 = mask_t[:, None] & mask_d[None, :]
            u = tl.load(v_base + ot[:, None] * svn + od[None, :] * svd, mask=m2, other=0.0).to(tl.float32)
            if HAS_SCALE:
                sc = tl.load(s_base + ot * ssn, mask=mask_t, other=0.0).to(tl.float32)
                u = u * sc[:, None]
            acc = tl.dot(kmat, u.to(OP_DTYPE).to(DOT_DTYPE), input_precision=PRECISION)
            acc += cin_re[:, None] * h_re[None, :] - cin_im[:, None] * h_im[None, :]
            tl.store(y_base + ot[:, None] * syn + od[None, :] * syd, acc.to(y_ptr.dtype.element_ty), mask=m2)
            s_re = tl.sum(w_re[:, None] * u, axis=0)
            s_im = tl.sum(w_im[:, None] * u, axis=0)
            h_re, h_im = _decay_add(aT_re, aT_im, h_re, h_im, s_re, s_im)

    @triton.jit
    def _wave_bwd_kernel(
        v_ptr, s_ptr, g_ptr, dv_ptr, ds_ptr, pg_ptr, t_ptr,
        H, N, D, BH,
        svb, svh, svn, svd,
        ssb, ssh, ssn,
        sgb, sgh, sgn, sgd,
        sdb, sdh, sdn, sdd,
        HAS_SCALE: tl.constexpr, NEED_DV: tl.constexpr, NEED_DS: tl.constexpr, NEED_PARAMS: tl.constexpr,
        LOAD_V: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, OP_DTYPE: tl.constexpr,
        DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    ):
        pid_bh, pid_d, b, h, it, offs_d, mask_d, od = _program_tile(H, D, BT, BD)
        tab = t_ptr + h * (6 * (BT + 1))

        # Transposed Toeplitz: rows j (the token whose gradient is computed), columns i >= j.
        lag_t = it[None, :] - it[:, None]
        ktmat = tl.where(lag_t >= 0, tl.load(tab + 2 * (BT + 1) + tl.maximum(lag_t, 0)), 0.0)
        ktmat = ktmat.to(OP_DTYPE).to(DOT_DTYPE)
        # Carry from the chunks after this one, q = BT - j tokens away: c r**q (dL/du), r**q (the
        # Bk part of sum u Bk and sum u D) and q r**(q-1) (the D part).
        q = BT - it
        cq_re = tl.load(tab + 2 * (BT + 1) + q)
        cq_im = tl.load(tab + 3 * (BT + 1) + q)
        rq_re = tl.load(tab + q)
        rq_im = tl.load(tab + (BT + 1) + q)
        aq_re = tl.load(tab + 4 * (BT + 1) + q)
        aq_im = tl.load(tab + 5 * (BT + 1) + q)
        # What the chunk's own g adds to the states at its first token: r**i and i r**(i-1).
        ri_re = tl.load(tab + it)
        ri_im = tl.load(tab + (BT + 1) + it)
        di_re = tl.load(tab + 4 * (BT + 1) + it)
        di_im = tl.load(tab + 5 * (BT + 1) + it)
        aT_re = tl.load(tab + BT)  # r**BT
        aT_im = tl.load(tab + (BT + 1) + BT)
        bT_re = tl.load(tab + 4 * (BT + 1) + BT)  # BT r**(BT-1)
        bT_im = tl.load(tab + 5 * (BT + 1) + BT)

        v_base = v_ptr + b * svb + h.to(tl.int64) * svh
        s_base = s_ptr + b * ssb + h.to(tl.int64) * ssh
        g_base = g_ptr + b * sgb + h.to(tl.int64) * sgh
        dv_base = dv_ptr + b * sdb + h.to(tl.int64) * sdh
        ds_base = ds_ptr + (pid_d.to(tl.int64) * BH + pid_bh) * N

        bk_re = tl.zeros([BD], dtype=tl.float32)  # Bk at the first token of the chunk after
        bk_im = tl.zeros([BD], dtype=tl.float32)
        dk_re = tl.zeros([BD], dtype=tl.float32)  # D at the first token of the chunk after
        dk_im = tl.zeros([BD], dtype=tl.float32)
        pc_re = tl.zeros([BD], dtype=tl.float32)  # carry parts of sum u Bk and sum u D
        pc_im = tl.zeros([BD], dtype=tl.float32)
        pr_re = tl.zeros([BD], dtype=tl.float32)
        pr_im = tl.zeros([BD], dtype=tl.float32)
        gram = tl.zeros([BT, BT], dtype=tl.float32)  # sum over chunks of g[i] . u[j]
        n_chunks = tl.cdiv(N, BT)
        for ci in range(0, n_chunks):
            t0 = (n_chunks - 1 - ci) * BT
            offs_t = t0 + it
            mask_t = offs_t < N
            ot = offs_t.to(tl.int64)
            m2 = mask_t[:, None] & mask_d[None, :]
            g = tl.load(g_base + ot[:, None] * sgn + od[None, :] * sgd, mask=m2, other=0.0).to(tl.float32)
            du = tl.dot(ktmat, g.to(OP_DTYPE).to(DOT_DTYPE), input_precision=PRECISION)
            du += cq_re[:, None] * bk_re[None, :] - cq_im[:, None] * bk_im[None, :]
            if HAS_SCALE:
                sc = tl.load(s_base + ot * ssn, mask=mask_t, other=0.0).to(tl.float32)
            if NEED_DV:
                if HAS_SCALE:
                    dv = du * sc[:, None]
                else:
                    dv = du
                tl.store(dv_base + ot[:, None] * sdn + od[None, :] * sdd, dv.to(dv_ptr.dtype.element_ty), mask=m2)
            if LOAD_V:  # v is read only for dL/dscale and the parameter sums
                v = tl.load(v_base + ot[:, None] * svn + od[None, :] * svd, mask=m2, other=0.0).to(tl.float32)
            if NEED_DS:
                tl.store(ds_base + ot, tl.sum(v * du, axis=1), mask=mask_t)
            if NEED_PARAMS:
                if HAS_SCALE:
                    u = v * sc[:, None]
                else:
                    u = v
                gram = tl.dot(g.to(OP_DTYPE).to(DOT_DTYPE), tl.trans(u.to(OP_DTYPE).to(DOT_DTYPE)), acc=gram,
                              input_precision=PRECISION)
                q_re = tl.sum(rq_re[:, None] * u, axis=0)
                q_im = tl.sum(rq_im[:, None] * u, axis=0)
                p_re = tl.sum(aq_re[:, None] * u, axis=0)
                p_im = tl.sum(aq_im[:, None] * u, axis=0)
                pc_re += q_re * bk_re - q_im * bk_im
                pc_im += q_re * bk_im + q_im * bk_re
                pr_re += p_re * bk_re - p_im * bk_im + q_re * dk_re - q_im * dk_im
                pr_im += p_re * bk_im + p_im * bk_re + q_re * dk_im + q_im * dk_re
                gd_re = tl.sum(di_re[:, None] * g, axis=0)
                gd_im = tl.sum(di_im[:, None] * g, axis=0)
                nd_re = bT_re * bk_re - bT_im * bk_im + aT_re * dk_re - aT_im * dk_im + gd_re
                nd_im = bT_re * bk_im + bT_im * bk_re + aT_re * dk_im + aT_im * dk_re + gd_im
                dk_re = nd_re
                dk_im = nd_im
            gb_re = tl.sum(ri_re[:, None] * g, axis=0)
            gb_im = tl.sum(ri_im[:, None] * g, axis=0)
            bk_re, bk_im = _decay_add(aT_re, aT_im, bk_re, bk_im, gb_re, gb_im)

        if NEED_PARAMS:
            # In-chunk parts: lag weights r**(i-j) (i >= j) and (i-j) r**(i-j-1) (zero at i = j) on
            # the Gram sum.
            lag = it[:, None] - it[None, :]
            lagc = tl.maximum(lag, 0)
            wc_re = tl.where(lag >= 0, tl.load(tab + lagc), 0.0)
            wc_im = tl.where(lag >= 0, tl.load(tab + (BT + 1) + lagc), 0.0)
            wr_re = tl.where(lag >= 0, tl.load(tab + 4 * (BT + 1) + lagc), 0.0)
            wr_im = tl.where(lag >= 0, tl.load(tab + 5 * (BT + 1) + lagc), 0.0)
            sc_re = tl.sum(pc_re, axis=0) + tl.sum(tl.sum(wc_re * gram, axis=1), axis=0)
            sc_im = tl.sum(pc_im, axis=0) + tl.sum(tl.sum(wc_im * gram, axis=1), axis=0)
            sr_re = tl.sum(pr_re, axis=0) + tl.sum(tl.sum(wr_re * gram, axis=1), axis=0)
            sr_im = tl.sum(pr_im, axis=0) + tl.sum(tl.sum(wr_im * gram, axis=1), axis=0)
            out = pg_ptr + (pid_d.to(tl.int64) * BH + pid_bh) * 4
            tl.store(out + 0, sc_re)
            tl.store(out + 1, sc_im)
            tl.store(out + 2, sr_re)
            tl.store(out + 3, sr_im)

    return _wave_fwd_kernel, _wave_bwd_kernel


def _dot_dtypes(dtype: torch.dtype) -> dict:
    """tl.dot operands are rounded to OP_DTYPE (the input dtype) and multiplied as DOT_DTYPE.

    On a GPU both are the input dtype (tensor cores, fp32 accumulation). triton's interpreter
    multiplies bfloat16 operands as their raw 16-bit patterns, so there the rounded operands are
    multiplied in fp32 instead: the same numbers, since a product of two bfloat16 values is exact
    in fp32 and the accumulation is fp32 either way.
    """
    op = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}[dtype]
    dot = tl.float32 if _INTERPRETED and dtype == torch.bfloat16 else op
    return {"OP_DTYPE": op, "DOT_DTYPE": dot}
