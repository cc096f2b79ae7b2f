"""``rest2visual simulate-nsd OUT ...``: write a simulated NSD and its ground truth."""

from __future__ import annotations

import argparse
import sys
import time

from rest2visual.nsd.simulate.networks import COUPLINGS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rest2visual simulate-nsd",
        description="Write a simulated NSD (NSD's keys, formats and quirks) to OUT/nsd and its "
                    "ground truth to OUT/truth. OUT appears only when complete.")
    p.add_argument("out", help="output folder (must not exist or hold only empty folders)")
    p.add_argument("--subjects", type=int, nargs="+", default=[1, 2], help="NSD subjects (1..8)")
    p.add_argument("--sessions", type=int, nargs="+", default=[21, 22],
                   help="NSD session numbers with rest runs (1..40)")
    p.add_argument("--trials", type=int, default=40,
                   help="trials per session: the first N of each NSD session (NSD: 750)")
    p.add_argument("--voxel-mm", type=float, default=4.0, help="native voxel size, mm (NSD: 1.8)")
    p.add_argument("--volumes", type=int, default=100, help="volumes per rest run (NSD: ~226)")
    p.add_argument("--images", type=int, default=200, help="images in imgBrick (NSD: 73000)")
    p.add_argument("--shared", type=int, default=40,
                   help="images shown to all subjects (NSD: 1000)")
    p.add_argument("--mni-mm", type=float, default=4.0, help="truth MNI grid resolution, mm")
    p.add_argument("--tr", type=float, default=1.33318, help="rest TR, s (NSD: 1.33318)")
    p.add_argument("--dmn-coupling", choices=COUPLINGS, default=COUPLINGS[0],
                   help="how the default-mode network's nodes share their course: zero_lag (the "
                        "physiology: one shared course) or hrf_driven (the rest of the network "
                        "is the PCC course convolved with the HRF: the paper's assumption)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rest2visual.nsd.simulate import simulate_nsd

    start = time.perf_counter()
    try:
        sim = simulate_nsd(args.out, subjects=args.subjects, sessions=args.sessions,
                           trials_per_session=args.trials, voxel_mm=args.voxel_mm,
                           volumes=args.volumes, n_images=args.images, n_shared=args.shared,
                           mni_resolution_mm=args.mni_mm, tr_s=args.tr, dmn_coupling=args.dmn_coupling,
                           seed=args.seed)
    except (ValueError, FileExistsError) as exc:
        print(f"rest2visual simulate-nsd: error: {exc}", file=sys.stderr)
        return 1
    print(f"simulated NSD: {len(args.subjects)} subject(s) × {len(args.sessions)} session(s) × "
          f"{args.trials} trials, {args.images} images, in {time.perf_counter() - start:.1f} s\n"
          f"  NSD keys:     {sim.nsd_root}\n  ground truth: {sim.truth_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
