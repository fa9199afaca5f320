"""Generate deterministic synthetic CTR/CVR sample data in EasyRec's Taobao schema.

Each output file is a header-less, comma-separated text file with 20 columns:

    clk, buy, pid, adgroup_id, cate_id, campaign_id, customer, brand,
    user_id, cms_segid, cms_group_id, final_gender_code, age_level,
    pvalue_level, shopping_level, occupation, new_user_class_level,
    tag_category_list, tag_brand_list, price

A fixed "world" (an item table of ~3000 ad groups and a user table of ~2000
users, both with Zipf-like popularity) is drawn from the seed; train and test
rows are independent draws of impressions (user, ad group, pid) from that world.
Item columns (cate/campaign/customer/brand/price) and user profile columns are
consistent per id.  tag_category_list / tag_brand_list are fixed per user,
'|'-separated, and overlap the user's preferred category groups.  Missing
values: ~3% empty pvalue_level / new_user_class_level, ~1% literal NULL
age_level / occupation, ~2% empty tag lists (missingness is per user).

Planted signal:
    logit(ctr) = bias + user effect (profile part + per-user part)
                 + item effect (cate part + brand part + per-ad-group part)
                 + 1.5 * [item cate_id in user's tag_category_list]
                 + pref[cms_group_id, cate group] + pid effect - price slope
    logit(cvr) = bias + user effect + item effect + shopping_level effect
                 - cheaper-is-better price effect      (drawn only for clicks)
giving clk rate ~7% and buy rate ~1% (buy=1 implies clk=1).  About 30% of
impressions are "targeted" (ad drawn from one of the user's tag categories).
On the default data a one-hot logistic regression reaches test AUC ~0.72 (ctr)
and ~0.70 (cvr on clicked rows).

It also writes a multi-domain data set for multi-scenario models (see
write_multidomain).

Usage:
    python scripts/make_sample_data.py [--out_dir samples/data] [--dataset all]
        [--train_rows 20000] [--test_rows 5000] [--seed 2026]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

COLUMNS = [
    "clk", "buy", "pid", "adgroup_id", "cate_id", "campaign_id", "customer",
    "brand", "user_id", "cms_segid", "cms_group_id", "final_gender_code",
    "age_level", "pvalue_level", "shopping_level", "occupation",
    "new_user_class_level", "tag_category_list", "tag_brand_list", "price",
]

N_ITEMS = 3000
N_CATES = 300
N_CATE_GROUPS = 10
N_CAMPAIGNS = 1500
N_CUSTOMERS = 1200
N_BRANDS = 800
N_USERS = 2000
MAX_TAGS = 8

PIDS = np.array(["430548_1007", "430539_1007"])
PID_PROBS = np.array([0.65, 0.35])
PID_CTR_EFFECT = np.array([0.25, -0.25])

# Effect sizes of the planted signal.
CTR_BIAS = -4.2
CTR_USER_SD = 0.65
CTR_ITEM_SD = 0.55
CTR_CATE_SD = 0.75
CTR_BRAND_SD = 0.3
CTR_PROFILE_SD = 0.4
CTR_TAG_MATCH = 1.5
CTR_PREF_SD = 0.5
CTR_PRICE_SLOPE = 0.012
CVR_BIAS = -2.75
CVR_USER_SD = 0.4
CVR_ITEM_SD = 0.4
CVR_SHOPPING = 0.8
CVR_PRICE_SLOPE = 0.07
TARGETED_FRACTION = 0.3  # impressions whose ad is drawn from a user's tag cates


def _unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """n distinct random integers in [low, high)."""
    return rng.choice(np.arange(low, high), size=n, replace=False)


def _zipf_probs(n: int, exponent: float, offset: float) -> np.ndarray:
    """Zipf-like popularity over n ids (in a random order is up to the caller)."""
    w = (np.arange(n) + offset) ** (-exponent)
    return w / w.sum()


def _weighted_subset(rng: np.random.Generator, probs: np.ndarray, target: float) -> np.ndarray:
    """Boolean mask of ids whose total probability mass is about `target`.

    Used for per-id missingness so that the fraction of *rows* with a missing
    cell is close to `target` even under skewed popularity.
    """
    mask = np.zeros(len(probs), dtype=bool)
    total = 0.0
    for i in rng.permutation(len(probs)):
        if total >= target:
            break
        if total + probs[i] <= target * 1.05:
            mask[i] = True
            total += probs[i]
    return mask


class _World:
    """Item and user tables shared between train and test draws."""

    def __init__(self, rng: np.random.Generator):
        # ---- categories -------------------------------------------------
        cate_ids = _unique_ids(rng, N_CATES, 1, 13000)
        cate_group = rng.integers(0, N_CATE_GROUPS, size=N_CATES)
        cate_pop = rng.permutation(_zipf_probs(N_CATES, 1.0, 3.0))

        # ---- item table (ad groups) --------------------------------------
        customer_ids = _unique_ids(rng, N_CUSTOMERS, 1, 260000)
        campaign_ids = _unique_ids(rng, N_CAMPAIGNS, 1, 420000)
        brand_ids = _unique_ids(rng, N_BRANDS, 1, 460000)
        adgroup_ids = _unique_ids(rng, N_ITEMS, 1, 850000)
        camp_customer = rng.integers(0, N_CUSTOMERS, size=N_CAMPAIGNS)
        customer_brand = rng.integers(0, N_BRANDS, size=N_CUSTOMERS)

        item_campaign = rng.integers(0, N_CAMPAIGNS, size=N_ITEMS)
        item_customer = camp_customer[item_campaign]
        # Mostly the customer's own brand, sometimes a random one.
        item_brand = np.where(
            rng.random(N_ITEMS) < 0.85,
            customer_brand[item_customer],
            rng.integers(0, N_BRANDS, size=N_ITEMS),
        )
        item_cate = rng.choice(N_CATES, size=N_ITEMS, p=cate_pop)
        cate_price_center = rng.integers(5, 45, size=N_CATES)
        item_price = np.clip(
            cate_price_center[item_cate] + rng.normal(0, 6, size=N_ITEMS).round(),
            0, 49,
        ).astype(np.int64)
        self.item_pop = rng.permutation(_zipf_probs(N_ITEMS, 1.0, 20.0))
        self.item_cate = item_cate
        self.item_cate_group = cate_group[item_cate]
        self.item_price = item_price
        # Item CTR effect = category part + brand part + ad-group specific part.
        cate_ctr = rng.normal(0, CTR_CATE_SD, size=N_CATES)
        brand_ctr = rng.normal(0, CTR_BRAND_SD, size=N_BRANDS)
        self.item_ctr = (cate_ctr[item_cate] + brand_ctr[item_brand]
                         + rng.normal(0, CTR_ITEM_SD, size=N_ITEMS))
        self.item_cvr = rng.normal(0, CVR_ITEM_SD, size=N_ITEMS)

        # Items grouped by category (for targeted impressions).
        order = np.argsort(item_cate, kind="stable")
        self.cate_items = order
        counts = np.bincount(item_cate, minlength=N_CATES)
        self.cate_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.cate_count = counts

        self.item_head = [
            f"{adgroup_ids[i]},{cate_ids[item_cate[i]]},"
            f"{campaign_ids[item_campaign[i]]},{customer_ids[item_customer[i]]},"
            f"{brand_ids[item_brand[i]]}"
            for i in range(N_ITEMS)
        ]
        self.item_price_str = [str(p) for p in item_price]

        # ---- user table --------------------------------------------------
        user_ids = _unique_ids(rng, N_USERS, 1, 1150000)
        self.user_pop = rng.permutation(_zipf_probs(N_USERS, 0.9, 10.0))
        group = rng.integers(0, 13, size=N_USERS)
        gender = np.where(group < 6, 1, 2)  # cms_group_id encodes gender/age
        flip = rng.random(N_USERS) < 0.05
        gender = np.where(flip, 3 - gender, gender)
        age = np.clip(group % 7 + rng.integers(-1, 2, size=N_USERS), 0, 6)
        segid = np.where(rng.random(N_USERS) < 0.6, 0, rng.integers(1, 97, size=N_USERS))
        pvalue = rng.choice([1, 2, 3], size=N_USERS, p=[0.3, 0.55, 0.15])
        shopping = rng.choice([1, 2, 3], size=N_USERS, p=[0.1, 0.25, 0.65])
        occupation = (rng.random(N_USERS) < 0.07).astype(np.int64)
        new_cls = rng.choice([1, 2, 3, 4], size=N_USERS, p=[0.1, 0.4, 0.35, 0.15])
        self.user_group = group
        self.user_shopping = shopping
        # User CTR effect = profile part (age, pvalue, new-user class) + user part.
        age_ctr = rng.normal(0, CTR_PROFILE_SD, size=7)
        self.user_ctr = (age_ctr[age] + CTR_PROFILE_SD * (pvalue - 2)
                         - CTR_PROFILE_SD * (new_cls - 2.5)
                         + rng.normal(0, CTR_USER_SD, size=N_USERS))
        self.user_cvr = rng.normal(0, CVR_USER_SD, size=N_USERS)
        # Segment (cms_group_id) x category-group preference.
        self.pref = rng.normal(0, CTR_PREF_SD, size=(13, N_CATE_GROUPS))

        # Tag lists: categories from the user's two favourite category groups.
        fav = np.argsort(-(self.pref[group] + rng.normal(0, 0.5, size=(N_USERS, N_CATE_GROUPS))),
                         axis=1)[:, :2]
        empty_tags = _weighted_subset(rng, self.user_pop, 0.02)
        n_tags = np.where(empty_tags, 0, rng.integers(1, MAX_TAGS + 1, size=N_USERS))
        tags = np.full((N_USERS, MAX_TAGS), -1, dtype=np.int64)
        tag_brand_str = []
        tag_cate_str = []
        cate_idx = np.arange(N_CATES)
        for u in range(N_USERS):
            k = n_tags[u]
            if k:
                in_fav = np.isin(cate_group, fav[u])
                w = cate_pop * np.where(in_fav, 1.0, 0.05)
                chosen = rng.choice(cate_idx, size=k, replace=False, p=w / w.sum())
                tags[u, :k] = chosen
                # Brands of items in the chosen categories (fallback: random).
                cand = item_brand[np.isin(item_cate, chosen)]
                if cand.size == 0:
                    cand = np.arange(N_BRANDS)
                nb = min(k, np.unique(cand).size)
                brands = rng.choice(np.unique(cand), size=nb, replace=False)
                tag_cate_str.append("|".join(str(cate_ids[c]) for c in chosen))
                tag_brand_str.append("|".join(str(brand_ids[b]) for b in brands))
            else:
                tag_cate_str.append("")
                tag_brand_str.append("")
        self.user_tags = tags
        self.user_ntags = n_tags

        def fmt(values, missing_mask, missing_token):
            return [missing_token if m else str(v) for v, m in zip(values, missing_mask)]

        age_s = fmt(age, _weighted_subset(rng, self.user_pop, 0.01), "NULL")
        occ_s = fmt(occupation, _weighted_subset(rng, self.user_pop, 0.01), "NULL")
        pvalue_s = fmt(pvalue, _weighted_subset(rng, self.user_pop, 0.03), "")
        newcls_s = fmt(new_cls, _weighted_subset(rng, self.user_pop, 0.03), "")
        self.user_str = [
            f"{user_ids[u]},{segid[u]},{group[u]},{gender[u]},{age_s[u]},"
            f"{pvalue_s[u]},{shopping[u]},{occ_s[u]},{newcls_s[u]},"
            f"{tag_cate_str[u]},{tag_brand_str[u]}"
            for u in range(N_USERS)
        ]


def _sample(world: _World, n: int, rng: np.random.Generator):
    """Draw n impressions; returns index/label arrays."""
    users = rng.choice(N_USERS, size=n, p=world.user_pop)
    items = rng.choice(N_ITEMS, size=n, p=world.item_pop)
    pids = rng.choice(len(PIDS), size=n, p=PID_PROBS)

    # Targeted impressions: pick one of the user's tag categories, then an
    # item of that category uniformly.
    ntags = world.user_ntags[users]
    targeted = (rng.random(n) < TARGETED_FRACTION) & (ntags > 0)
    slot = (rng.random(n) * np.maximum(ntags, 1)).astype(np.int64)
    cate = world.user_tags[users, slot]
    cnt = world.cate_count[np.maximum(cate, 0)]
    targeted &= cnt > 0
    pos = world.cate_start[np.maximum(cate, 0)] + (rng.random(n) * np.maximum(cnt, 1)).astype(np.int64)
    items = np.where(targeted, world.cate_items[np.minimum(pos, N_ITEMS - 1)], items)

    item_cate = world.item_cate[items]
    match = (world.user_tags[users] == item_cate[:, None]).any(axis=1)
    price = world.item_price[items]

    logit_ctr = (
        CTR_BIAS
        + world.user_ctr[users]
        + world.item_ctr[items]
        + CTR_TAG_MATCH * match
        + world.pref[world.user_group[users], world.item_cate_group[items]]
        + PID_CTR_EFFECT[pids]
        - CTR_PRICE_SLOPE * (price - 25)
    )
    clk = rng.random(n) < 1.0 / (1.0 + np.exp(-logit_ctr))

    logit_cvr = (
        CVR_BIAS
        + world.user_cvr[users]
        + world.item_cvr[items]
        + CVR_SHOPPING * (world.user_shopping[users] - 2)
        - CVR_PRICE_SLOPE * (price - 25)
    )
    buy = clk & (rng.random(n) < 1.0 / (1.0 + np.exp(-logit_cvr)))
    return users, items, pids, clk.astype(np.int64), buy.astype(np.int64)


def _seeds(seed):
    """(world, train, test) child seed sequences derived from one seed."""
    return np.random.SeedSequence(seed).spawn(3)


def taobao_rows(n: int, rng_or_seed, split: str = "train", world_seed=None) -> list[list[str]]:
    """Return n rows (lists of 20 strings) in the Taobao schema.

    If `rng_or_seed` is an int, the world is built from that seed and rows
    come from its `split` ("train" or "test") stream, exactly as written by
    `write_taobao`.  If it is a numpy Generator, the world is built from
    `world_seed` (default 0) and rows are drawn with that generator.
    """
    return [line.split(",") for line in _lines(n, rng_or_seed, split, world_seed)]


_WORLD_CACHE: dict = {}


def _world_for(seq: np.random.SeedSequence) -> _World:
    key = (seq.entropy, tuple(seq.spawn_key))
    if key not in _WORLD_CACHE:
        _WORLD_CACHE.clear()
        _WORLD_CACHE[key] = _World(np.random.default_rng(seq))
    return _WORLD_CACHE[key]


def _lines(n, rng_or_seed, split="train", world_seed=None) -> list[str]:
    if isinstance(rng_or_seed, np.random.Generator):
        world = _world_for(_seeds(0 if world_seed is None else world_seed)[0])
        rng = rng_or_seed
    else:
        s_world, s_train, s_test = _seeds(int(rng_or_seed))
        world = _world_for(s_world)
        rng = np.random.default_rng(s_train if split == "train" else s_test)
    users, items, pids, clk, buy = _sample(world, n, rng)
    ih, ip, us = world.item_head, world.item_price_str, world.user_str
    return [
        f"{c},{b},{PIDS[p]},{ih[i]},{us[u]},{ip[i]}"
        for c, b, p, i, u in zip(clk.tolist(), buy.tolist(), pids.tolist(),
                                 items.tolist(), users.tolist())
    ]


def _write(path: str, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))


def _summary(path: str, lines: list[str]) -> str:
    n = len(lines)
    clk = sum(line[0] == "1" for line in lines)
    buy = sum(line[2] == "1" for line in lines)
    return (f"{path}\trows={n}\tclk_rate={clk / max(n, 1):.4f}\t"
            f"buy_rate={buy / max(n, 1):.4f}")


def write_taobao(out_dir: str, train_rows: int = 20000, test_rows: int = 5000,
                 seed: int = 2026, verbose: bool = False) -> tuple[str, str]:
    """Write <out_dir>/taobao_train_data and taobao_test_data; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    train_path = os.path.join(out_dir, "taobao_train_data")
    test_path = os.path.join(out_dir, "taobao_test_data")
    for path, n, split in ((train_path, train_rows, "train"), (test_path, test_rows, "test")):
        lines = _lines(n, seed, split)
        _write(path, lines)
        if verbose:
            print(_summary(path, lines))
    return train_path, test_path


# -- Multi-domain data --------------------------------------------------------
# One world, four scenarios (think: home feed, search, detail page, short video) with
# different traffic and different feature->label relations, so models that condition on
# the scenario can and should beat plain multi-task models on it.

MULTIDOMAIN_COLUMNS = ["clk", "like", "domain", "user_id", "item_id", "user_group", "gender",
                       "age_bucket", "item_cate", "hour", "price"]
MD_USERS, MD_ITEMS, MD_GROUPS, MD_CATES, MD_AGES = 1000, 500, 6, 10, 5
MD_TRAFFIC = np.array([0.4, 0.3, 0.2, 0.1])
MD_CLK_BIAS = np.array([-2.0, -1.4, -2.4, -1.0])
MD_LIKE_BIAS = np.array([-1.2, -2.0, -0.6, -1.5])
MD_PRICE_SLOPE = np.array([-0.6, 0.4, -0.1, 0.7])  # per unit of log(price / 20)
MD_HOUR_PHASE = np.array([20.0, 12.0, 8.0, 22.0])  # hour of each scenario's click peak


class _MultiDomainWorld:
    """Users, items and per-scenario preference tables drawn from one seed."""

    def __init__(self, rng: np.random.Generator):
        n_dom = len(MD_TRAFFIC)
        self.user_pop = _zipf_probs(MD_USERS, 1.0, 10.0)
        self.item_pop = _zipf_probs(MD_ITEMS, 1.0, 10.0)
        self.user_group = rng.integers(0, MD_GROUPS, MD_USERS)
        self.gender = rng.integers(0, 2, MD_USERS)
        self.age = rng.integers(0, MD_AGES, MD_USERS)
        self.item_cate = rng.integers(0, MD_CATES, MD_ITEMS)
        self.price = np.round(np.exp(rng.normal(np.log(20.0), 0.8, MD_ITEMS)), 2)
        self.user_clk = rng.normal(0, 0.3, MD_USERS)
        self.item_clk = rng.normal(0, 0.3, MD_ITEMS)
        self.user_like = rng.normal(0, 0.3, MD_USERS)
        # Preferences: a small shared part plus a larger scenario-specific part.
        shared = rng.normal(0, 1.0, (MD_GROUPS, MD_CATES))
        self.clk_pref = 0.4 * shared + rng.normal(0, 1.2, (n_dom, MD_GROUPS, MD_CATES))
        shared_like = rng.normal(0, 1.0, (MD_AGES, MD_CATES))
        self.like_pref = 0.4 * shared_like + rng.normal(0, 1.2, (n_dom, MD_AGES, MD_CATES))
        self.like_gender = rng.normal(0, 0.8, (n_dom, 2))


def _multidomain_lines(world: _MultiDomainWorld, n: int, rng: np.random.Generator) -> list[str]:
    domain = rng.choice(len(MD_TRAFFIC), size=n, p=MD_TRAFFIC)
    users = rng.choice(MD_USERS, size=n, p=world.user_pop)
    items = rng.choice(MD_ITEMS, size=n, p=world.item_pop)
    hour = rng.integers(0, 24, n)
    cate, group, age = world.item_cate[items], world.user_group[users], world.age[users]
    price = world.price[items]
    logit_clk = (MD_CLK_BIAS[domain] + world.user_clk[users] + world.item_clk[items]
                 + world.clk_pref[domain, group, cate]
                 + 0.6 * np.cos(2 * np.pi * (hour - MD_HOUR_PHASE[domain]) / 24)
                 + MD_PRICE_SLOPE[domain] * np.log(price / 20.0))
    clk = rng.random(n) < 1 / (1 + np.exp(-logit_clk))
    logit_like = (MD_LIKE_BIAS[domain] + world.user_like[users]
                  + world.like_pref[domain, age, cate]
                  + world.like_gender[domain, world.gender[users]])
    like = clk & (rng.random(n) < 1 / (1 + np.exp(-logit_like)))
    return [f"{c},{k},{d},u{u},i{i},{world.user_group[u]},{world.gender[u]},{world.age[u]},"
            f"{world.item_cate[i]},{h},{world.price[i]:.2f}"
            for c, k, d, u, i, h in zip(clk.astype(int).tolist(), like.astype(int).tolist(),
                                        domain.tolist(), users.tolist(), items.tolist(),
                                        hour.tolist())]


def write_multidomain(out_dir: str, train_rows: int = 20000, test_rows: int = 5000,
                      seed: int = 2026, verbose: bool = False) -> tuple[str, str]:
    """Write <out_dir>/multidomain_train_data and multidomain_test_data (header-less CSV in
    MULTIDOMAIN_COLUMNS order: labels clk and like (like implies clk), the scenario id
    `domain` in 0..3, user and item ids and attributes, the hour and the price).

    logit(clk) = bias[d] + user + item + pref_clk[d, user_group, item_cate]
                 + 0.6 cos(2 pi (hour - peak[d]) / 24) + slope[d] log(price / 20)
    logit(like | clk) = bias[d] + user + pref_like[d, age_bucket, item_cate] + gender[d]
    with each pref = 0.4 * shared + scenario-specific part (3x the shared spread).
    """
    os.makedirs(out_dir, exist_ok=True)
    s_world, s_train, s_test = np.random.SeedSequence([seed, 4]).spawn(3)
    world = _MultiDomainWorld(np.random.default_rng(s_world))
    paths = []
    for name, n, seq in (("train", train_rows, s_train), ("test", test_rows, s_test)):
        path = os.path.join(out_dir, f"multidomain_{name}_data")
        lines = _multidomain_lines(world, n, np.random.default_rng(seq))
        _write(path, lines)
        if verbose:
            print(_summary(path, lines))
        paths.append(path)
    return paths[0], paths[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out_dir", default="samples/data")
    parser.add_argument("--dataset", choices=["taobao", "multidomain", "all"], default="all")
    parser.add_argument("--train_rows", type=int, default=20000)
    parser.add_argument("--test_rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    if args.dataset in ("taobao", "all"):
        write_taobao(args.out_dir, args.train_rows, args.test_rows, args.seed, verbose=True)
    if args.dataset in ("multidomain", "all"):
        write_multidomain(args.out_dir, args.train_rows, args.test_rows, args.seed,
                          verbose=True)


if __name__ == "__main__":
    main()
