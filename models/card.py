"""Model cards: a Markdown file beside every artifact saying what it was trained on and how good it is."""

from __future__ import annotations

from pathlib import Path

LICENCE_NOTE = (
    "Trained on public Chinese review data sets published for research and teaching "
    "(online_shopping_10_cats, ChnSentiCorp_htl_all and waimai_10k from SophonPlus/ChineseNlpCorpus; "
    "the Zhijiang Cup 2019 cosmetics opinion set; the CCF BDCI 2018 car forum set; Dianping restaurant "
    "sentences). None carries an open data licence: the model inherits their research/teaching-use terms. "
    "Check them before commercial use."
)


def _domain_table(per_domain: dict) -> list[str]:
    rows = ["| domain | n | accuracy |", "|---|---:|---:|"]
    rows += [f"| {d} | {v['n']} | {v['accuracy']:.4f} |" for d, v in per_domain.items()]
    return rows


def write_model_card(folder: Path, meta: dict, top_features: dict[str, list[str]] | None = None,
                     description: str = "", limits: str = "") -> Path:
    """Write ``MODEL_CARD.md`` into ``folder`` from the artifact's metadata."""
    m = meta["metrics"]
    test, dev = m["test"], m["dev"]
    lines = [
        f"# {meta['model_version']}",
        "",
        f"Task: {meta['task']} (labels neg / neu / pos; score = P(pos) − P(neg) in [-1, 1]). "
        f"Kind: {meta['kind']}. Trained {meta['trained_at']} on {meta['train_rows']} rows.",
        "",
        "## Model",
        description,
        "",
        "## Data",
        "- `reviews_sentiment.csv` (binary pos/neg; e-commerce, hotel, food delivery) with its fixed "
        "train/dev/test split;",
        "- neutral, positive and negative reviews from the aspect sets (car forum posts, cosmetics "
        "reviews: split by a hash of the text; restaurant sentences: their own split).",
        "",
        "Model selection and calibration used `dev` only; `test` was scored once, at the end.",
        "",
        "## Metrics on test (held out)",
        f"- binary accuracy on `reviews_sentiment` test (pos vs neg by P(pos) > P(neg)): "
        f"**{test['binary']['accuracy']:.4f}** (n={test['binary']['n']}), ECE {test['binary']['ece']:.4f}",
        f"- three-class accuracy on the aspect sets' test rows: **{test['three_class']['accuracy']:.4f}**, "
        f"macro-F1 {test['three_class']['macro_f1']:.4f} (n={test['three_class']['n']}), "
        f"per-label F1 {test['three_class']['per_label_f1']}, ECE {test['three_class']['ece']:.4f}",
        f"- dev: binary {dev['binary']['accuracy']:.4f}, three-class {dev['three_class']['accuracy']:.4f}",
        "",
        "### Binary accuracy per domain (test)",
        *_domain_table(test["binary"]["per_domain"]),
        "",
        "### Three-class accuracy per domain (test)",
        *_domain_table(test["three_class"]["per_domain"]),
        "",
    ]
    if "ood_probe" in m:
        probe = m["ood_probe"]
        lines += ["### Out-of-domain probe", "",
                  f"`data/eval/ood_probe.csv`: {probe['n']} texts unlike the training reviews (formal complaints, "
                  "long letters, short chat lines), written by cxloop's developers for evaluation only. "
                  f"Binary accuracy on its pos/neg rows **{probe['binary_accuracy']:.4f}**, three-class "
                  f"**{probe['three_class_accuracy']:.4f}**. It is small: read it as a smoke test of robustness.",
                  "", *_domain_table(probe["per_domain"]), ""]
    if top_features:
        lines += ["## Strongest features per label", ""]
        lines += [f"- **{lab}**: {'、'.join(f.replace(' ', '_') for f in feats)}"
                  for lab, feats in top_features.items()]
        lines.append("")
    lines += ["## Licence note", LICENCE_NOTE, "",
              "## Limits",
              "Reviews dominate the data: formal complaint letters, hotline notes and banking vocabulary are "
              "under-represented. " + (limits or "Sarcasm and negation across clauses fool a bag-of-n-grams model."),
              ""]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
