"""SDS trained and scored on generated region candidates: demo_sds.py with selective search's regions in place of
the ground-truth stand-in (not a paper row).

  python scripts/make_synthetic.py --root ~/.cache/segjax/synthetic  # or any run on the synthetic data
  python scripts/region_candidates.py --root ~/.cache/segjax/synthetic --split train2017 --workers 2 \
      --out ~/.cache/segjax/synthetic/selective_search_train2017
  python scripts/region_candidates.py --root ~/.cache/segjax/synthetic --split val2017 --workers 2 \
      --out ~/.cache/segjax/synthetic/selective_search_val2017
  python -m segjax.main --config=experiments/demo_sds_selective_search.py --workdir=workdirs/demo_sds_ss

The candidates are what SDS would get from MCG on real images: regions of a bottom-up grouping that knows nothing of
the objects (scripts/region_candidates.py: selective search's fast mode over Felzenszwalb-Huttenlocher superpixels,
segjax/data/hierarchical_grouping.py), the first NUM_CANDIDATES per image in its pseudo-random ranking. Training
samples its regions among them (foreground at region overlap >= 0.5), and validation scores only them, so a missed
object stays missed: the AP measures the candidates' recall together with the network.
Target: mask_APr50 >= 0.5 on the synthetic validation split within 15 minutes of 2 CPU cores.
"""
import ml_collections

from experiments import demo_sds

NUM_CANDIDATES = 256


def get_config():
  config = demo_sds.get_config()
  config.dataset.num_region_proposals = NUM_CANDIDATES
  config.dataset.region_proposal_dirs = ml_collections.ConfigDict(
      {"train2017": "selective_search_train2017", "val2017": "selective_search_val2017"})  # in the root
  return config
