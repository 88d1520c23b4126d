"""How much a synthetic noise model looks like a camera's real noise: on a folder of noisy/clean photo pairs
(e.g. PolyU-Canon5D2), the residual noisy - clean of the real photos and of each --noise spec applied to the
clean ones, as its standard deviation (0-255), its correlation with the horizontal neighbour 1 and 2 pixels
away, and between colour channels. With --draws N, also each spec's bias: the PSNR of the noise's expectation (estimated
from N draws) against the clean photo, the ceiling of a Noise2Noise model trained on targets with that noise (its
mean is not the clean image where the noise passes through clipping or a tone curve). One JSON line each."""
import json

import numpy as np

import common

import cli
from noise_model import get_noise_model, noise_spec


def get_args():
    parser = common.get_parser(__doc__)
    parser.add_argument("--pairs", type=cli.existing_dir, default=str(common.DATASETS / "PolyU-Canon5D2"),
                        help="folder with noisy/ and clean/ photos of the same names")
    parser.add_argument("--noise", nargs="*", type=noise_spec,
                        default=["camera,45,45+chroma,3,3+grain,2,2+jpeg,90,90", "gaussian,4,4"],
                        help="noise specs to compare with the real noise (drawn on the clean photos)")
    parser.add_argument("--draws", type=int, default=0,
                        help="noisy draws per photo averaged for the bias (0: no bias measurement)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic noise")
    return parser.parse_args()


def correlation(a, b):
    """Pearson correlation of two equally shaped float arrays of zero-mean residuals."""
    return float((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean()))


def residual_stats(noisy, clean):
    """{std, lag1, lag2, cross_channel} of one HxWx3 residual, each channel's mean removed."""
    residual = noisy.astype(np.float64) - clean
    residual -= residual.mean(axis=(0, 1))
    channels = range(residual.shape[2])
    return {"std": float(residual.std()),
            "lag1": np.mean([correlation(residual[:, :-1, c], residual[:, 1:, c]) for c in channels]),
            "lag2": np.mean([correlation(residual[:, :-2, c], residual[:, 2:, c]) for c in channels]),
            "cross_channel": np.mean([correlation(residual[..., a], residual[..., b])
                                      for a, b in ((0, 1), (0, 2), (1, 2))])}


def mean_stats(pairs, noisy_of):
    """residual_stats averaged over the photos, `noisy_of(name, noisy, clean)` giving the noisy version."""
    stats = [residual_stats(noisy_of(name, noisy, clean), clean) for name, noisy, clean in pairs]
    return {key: round(float(np.mean([entry[key] for entry in stats])), 3) for key in stats[0]}


def bias_psnr(pairs, noise, rng, draws):
    """Mean PSNR (dB) against the clean photos of the noise's expectation, from `draws` noisy versions of each:
    the squared error of their mean less its sampling part (the draws' variance / draws)."""
    values = []
    for _, _, clean in pairs:
        samples = np.stack([noise(clean, rng).astype(np.float64) for _ in range(draws)])
        squared_bias = np.mean((samples.mean(axis=0) - clean) ** 2) - np.mean(samples.var(axis=0, ddof=1)) / draws
        values.append(10 * np.log10(255.0**2 / max(squared_bias, 1e-6)))
    return round(float(np.mean(values)), 2)


def main():
    args = get_args()
    pairs = common.read_pairs(args.pairs)
    print(json.dumps({"bench": "noise_stats", "noise": "real", "photos": len(pairs),
                      **mean_stats(pairs, lambda name, noisy, clean: noisy)}), flush=True)
    for spec in args.noise:
        noise, rng = get_noise_model(spec), np.random.default_rng(args.seed)
        line = {"bench": "noise_stats", "noise": spec,
                **mean_stats(pairs, lambda name, noisy, clean: noise(clean, rng))}
        if args.draws:
            line["bias_psnr"] = bias_psnr(pairs, noise, rng, args.draws)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
