"""XOR with exact spike-time gradients (paper 004 §5.1, Table 1): a 2-4-2 LIF network,
trained full-batch from many random initialisations until it classifies all four patterns.

    python examples/fp_xor.py                  # 100 initialisations, the coding that reproduces the paper's figures (~2 min)
    python examples/fp_xor.py --late 2.0 --gamma 0.2    # the coding the paper's text states (~10 min here)
    python examples/fp_xor.py --inits 1000     # the paper's count

Each input bit is one spike: 0 -> t = 0.0 (early), 1 -> t = `--late` (paper: 2.0; the
released notebook: 1.0). alpha = 1.0, beta = 0.99, theta = 1, T = 2, hidden weights
N(3, 1), output weights N(2, 0.1), Adam (lr 0.1, betas 0.9/0.999, eps 1e-8), loss tau0 =
0.1, tau1 = 1, gamma = 0.2 (paper table; the notebook's loss object used 0). One step is
one update on the full batch of four patterns; "steps to converge" counts the updates
made before all four are classified correctly (0 if the initial network already is).

With the paper's coding, the pattern (1, 1) has both input spikes at t = 2.0 = T: nothing
fires before the horizon, every output counts as firing at T, and the tie goes to class 0,
which is XOR(1, 1). The network has to learn the other three patterns, and (0, 1) and
(1, 0) are single input spikes: an initialisation where no hidden neuron reaches threshold
from one spike leaves that pattern silent, with zero gradient, for good. Measured here (100
initialisations, cap 1000 steps): paper coding and gamma 0.2: 91/100 converge (mean 64.6,
max 651 steps); notebook coding (--late 1.0) and gamma 0: 100/100 (mean 17.53, median 16,
max 83), which matches the paper's reported mean 17.52 / max 98. The default is therefore
the notebook's coding: it is the one that reproduces the reported numbers (a documented
switch, `--late 2.0 --gamma 0.2`, gives the text's).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_fsnn.fp import ExactSpikingNetwork, FirstSpikeCrossEntropy  # noqa: E402


def xor_data(late):
    bits = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    return bits * float(late), np.bitwise_xor(bits[:, 0], bits[:, 1])


def steps_to_converge(seed, args):
    """Updates until 100% accuracy on the four patterns (None if not within the cap)."""
    x, y = xor_data(args.late)
    net = ExactSpikingNetwork([2, 4, 2], alpha=1.0, beta=0.99, theta=1.0, t_max=2.0,
                              weight_init=[(3.0, 1.0), (2.0, 0.1)],
                              loss=FirstSpikeCrossEntropy(tau0=0.1, tau1=1.0, gamma=args.gamma,
                                                          regulariser=args.regulariser),
                              own_spike_terms=not args.released_L, seed=seed)
    optimizer = keras.optimizers.Adam(args.lr, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    for step in range(args.max_steps + 1):
        if (net.predict(x) == y).all():
            return step
        if step == args.max_steps:
            return None
        net.train_on_batch(x, y, optimizer=optimizer)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inits", type=int, default=100, help="random initialisations (seeds 0..inits-1)")
    parser.add_argument("--max-steps", type=int, default=1000, help="give up after this many updates")
    parser.add_argument("--late", type=float, default=1.0, help="spike time of a 1 bit (notebook 1.0, paper text 2.0)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--gamma", type=float, default=0.0, help="regulariser strength (notebook 0, paper table 0.2)")
    parser.add_argument("--regulariser", default="add", choices=["add", "subtract"])
    parser.add_argument("--released-L", action="store_true", help="drop the own-spike terms of L (released code)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    steps = [steps_to_converge(seed, args) for seed in range(args.inits)]
    done = [s for s in steps if s is not None]
    print(f"XOR 2-4-2, late spike {args.late}, gamma {args.gamma} ({args.regulariser}), "
          f"{'released' if args.released_L else 'exact'} L, lr {args.lr}")
    print(f"converged to 100%: {len(done)}/{args.inits} initialisations within {args.max_steps} steps")
    if done:
        print(f"steps to converge: mean {np.mean(done):.2f}, median {np.median(done):.0f}, max {max(done)}")
    failed = [seed for seed, s in enumerate(steps) if s is None]
    if failed:
        print(f"not converged: seeds {failed}")
    print(f"(paper: 1000/1000, max 98, mean 17.52)  [{time.perf_counter() - start:.1f} s]")
    return steps


if __name__ == "__main__":
    main()
