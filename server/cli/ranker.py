"""``shoptalk ranker ...``: train and evaluate the LLM ranker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from server.cli.common import DataDir, cli_settings, console, progress_view, setup_logging
from server.settings import Settings

ranker_app = typer.Typer(help="The LLM ranker (second-stage re-ranking).", no_args_is_help=True)


def _ranker_searcher(settings: Settings, catalog_file: Path | None, ranker: Any) -> Any:
    """A `RankedSearcher` over the training catalog (a products.jsonl, else the served one) with `ranker`."""
    from assistant.catalog.model import Catalog
    from assistant.search.rerank import LLMReranker, RankedSearcher
    from assistant.search.retrieval import HybridRetriever
    from ranking.text_encoder import TextEncoder
    from server.engines import load_catalog

    catalog = Catalog.load_jsonl(catalog_file) if catalog_file is not None else load_catalog(settings)
    index_dir = None if catalog_file is not None else settings.data_dir / "index"
    retriever = HybridRetriever(catalog, TextEncoder(device=settings.device), cache_dir=index_dir)
    return RankedSearcher(retriever, LLMReranker(ranker, catalog))


CatalogFile = Annotated[Path | None, typer.Option("--catalog", help="Train on this products.jsonl instead of the "
                                                  "served catalog.")]


@ranker_app.command("train")
def ranker_train(
    data_dir: DataDir,
    queries: Annotated[int, typer.Option(help="Generated training queries.")] = 4000,
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 4,
    max_seconds: Annotated[float | None, typer.Option(help="Wall-clock budget for training.")] = None,
    feedback: Annotated[Path | None, typer.Option(help="Shopper feedback events (JSONL: query, product_id, "
                                                  "kind = click|add_to_cart|purchase|dislike) to train on too.")] = None,
    catalog: CatalogFile = None,
    out: Annotated[Path | None, typer.Option(help="Checkpoint to write (default: the configured one).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the generated queries and the shuffling.")] = 0,
) -> None:
    """Fine-tune the ranker (LoRA + heads) on generated spoken queries over a catalog and on shopper feedback.

    Candidates and features come from the serving pipeline (hybrid retrieval and its hard negatives).
    """
    import time

    from assistant.search.training import training_examples
    from ranking.registry import create_ranker
    from ranking.train import read_feedback, train
    from server.engines import configure_threads

    setup_logging()
    settings = cli_settings(data_dir)
    if settings.ranker in ("", "none"):
        console.print("[red]no ranker configured (SHOPTALK_RANKER)[/red]")
        raise typer.Exit(2)
    if feedback is not None and not feedback.is_file():
        console.print(f"[red]no feedback file at {feedback}[/red]")
        raise typer.Exit(2)
    configure_threads(settings)
    started = time.perf_counter()
    model = create_ranker(settings.ranker, cache_dir=settings.cache_dir, device=settings.device)
    searcher = _ranker_searcher(settings, catalog, model)
    events = read_feedback(feedback) if feedback is not None else None
    examples = training_examples(searcher, queries, seed=seed, feedback=events)
    n_feedback = sum(1 for e in examples if e.meta.get("feedback"))
    out = out or settings.ranker_checkpoint_path
    out.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"training {settings.ranker} on {len(examples)} queries ({n_feedback} from feedback; held-out "
                  "evaluations in the log; it may stop early when they stop improving)")
    with progress_view() as progress:
        result = train(model, examples, epochs=epochs, out=out, progress=True, max_seconds=max_seconds,
                       eval_every=100, eval_fraction=0.1, patience=4, seed=seed, on_step=progress)
    console.print(f"held-out nDCG@10 {result['initial']['ndcg@10']:.3f} -> {result['best']['ndcg@10']:.3f}, "
                  f"MRR {result['initial']['mrr']:.3f} -> {result['best']['mrr']:.3f} "
                  f"({result['steps']} steps, {result['seconds']:.0f} s training, "
                  f"{time.perf_counter() - started:.0f} s in all); checkpoint written to {out}")


@ranker_app.command("eval")
def ranker_eval(
    data_dir: DataDir,
    queries: Annotated[int, typer.Option(help="Generated queries (the held-out share is scored).")] = 3000,
    catalog: CatalogFile = None,
) -> None:
    """Held-out nDCG@10 / MRR over the candidate pools: the trained ranker against the untrained one.

    The untrained head reproduces retrieval's order, so the second row is the gain over retrieval.
    """
    from assistant.search.rerank import product_dict
    from assistant.search.training import retrieval_examples
    from ranking.queries import is_heldout, spoken_queries
    from ranking.registry import create_ranker
    from ranking.train import evaluate
    from server.engines import configure_threads

    settings = cli_settings(data_dir)
    out = settings.ranker_checkpoint_path
    if not out.exists():
        console.print(f"[red]no trained ranker at {out} (run `shoptalk ranker train`)[/red]")
        raise typer.Exit(2)
    configure_threads(settings)
    untrained = create_ranker(settings.ranker, cache_dir=settings.cache_dir, device=settings.device)
    trained = create_ranker(settings.ranker, cache_dir=settings.cache_dir, checkpoint=out, device=settings.device)
    searcher = _ranker_searcher(settings, catalog, trained)
    products = [product_dict(searcher.catalog, p) for p in searcher.catalog.parents()]
    heldout = retrieval_examples(searcher, [g for g in spoken_queries(products, queries) if is_heldout(g.text)])
    rows = {"untrained (= retrieval)": evaluate(untrained, heldout), "trained": evaluate(trained, heldout)}
    print(f"{len(heldout)} held-out queries")
    for name, m in rows.items():
        print(f"{name:24s} nDCG@10 {m['ndcg@10']:.4f}  MRR {m['mrr']:.4f}")
