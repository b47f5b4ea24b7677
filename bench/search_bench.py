"""Benchmark of querylog.analytics.search: synthetic Korean/English query log, index build, top-k latency."""

# Usage: .venv/bin/python bench/search_bench.py --n 1000000 [--dir .querylog/bench/search] [--baseline]
# The corpus imitates a Korean stock/news chat API: company names with Zipf-like popularity (a head of real
# names, a long tail of made-up ones), particles chosen by the final consonant, compounds without spaces,
# English and mixed queries, a little NFD and full-width input. Corpus and index are cached under --dir per N
# (--rebuild times the build again). Each phase runs in its own process, so the peak RSS it reports is its own.
# The result is one JSON document on stdout.

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def _words(text: str) -> list[str]:
    return text.split()


KO_HEAD = _words(
    "삼성전자 SK하이닉스 LG에너지솔루션 삼성바이오로직스 현대차 기아 셀트리온 POSCO홀딩스 네이버 카카오 카카오뱅크 "
    "카카오페이 삼성SDI LG화학 현대모비스 KB금융 신한지주 하나금융지주 삼성물산 삼성생명 한국전력 SK텔레콤 KT LG전자 "
    "엔씨소프트 크래프톤 넷마블 하이브 에코프로 에코프로비엠 포스코퓨처엠 두산에너빌리티 한화에어로스페이스 "
    "HD현대중공업 대한항공 아모레퍼시픽 CJ제일제당 네이버웹툰 쿠팡 삼성중공업 한미반도체 알테오젠 HLB "
    "레인보우로보틱스 리노공업 "
    "엔비디아 애플 테슬라 마이크로소프트 아마존 구글 메타 인텔 넷플릭스 팔란티어 브로드컴 퀄컴 TSMC AMD"
)
EN_HEAD = _words(
    "NVIDIA Apple Tesla Microsoft Amazon Google Meta AMD Intel TSMC Netflix Palantir Broadcom Qualcomm Samsung "
    "Hynix Coupang Oracle Salesforce Adobe Micron Uber Airbnb Shopify Snowflake Disney Nike Boeing Pfizer Moderna"
)
TOPICS = _words(
    "주가 전망 실적 배당 배당금 뉴스 목표주가 시가총액 영업이익 매출 분기실적 실적발표 공시 수주 인수 합병 상장 공모주 "
    "유상증자 자사주 금리 환율 반도체 이차전지 AI 인공지능 HBM 전기차 바이오 신약 임상 주주총회 액면분할 신고가 저평가"
)
EN_TOPICS = _words(
    "stock price earnings dividend outlook forecast news guidance revenue buyback split valuation target chart "
    "analyst rating short interest options"
)
SUFFIXES = _words("전자 바이오 제약 화학 건설 증권 에너지 테크 소프트 로직스 홀딩스 반도체 모빌리티 머티리얼즈 솔루션")
TAILS = [
    "알려줘",
    "어때",
    "어떻게 돼",
    "얼마야",
    "언제야",
    "왜 떨어졌어",
    "왜 올랐어",
    "사도 될까",
    "괜찮아?",
    "정리해줘",
]
INTENTS = ["stock_price", "news", "earnings", "comparison", "general", "recommendation"]
INTENT_P = [0.33, 0.25, 0.15, 0.1, 0.1, 0.07]
# Common syllables, so that made-up names and words look like Korean and share bigrams with real ones.
SYLLABLES = list(
    "가각간강개거건게경계고공과관광교구국군권규그근금기길김나남내너노누니다단달담당대더도동두드등디라락란람랑래러레"
    "로록론료루류르리마만말망매머메명모목무문미민바박반발방배백버번범법베변별보복본봉부북분불비빈사산살상새서석선설"
    "성세소속손송수숙순스승시식신실심아악안알암압앙애야약양어언업에여역연열영예오온올완왕외요용우운울원위유육윤으은"
    "을음의이익인일임입자작잔장재저적전절점정제조종주준중지직진질집차착찬참창채처천철청체초총최추축춘출충취치친침카"
    "커코쿠크키타탁탄태터토통투트특티파판팔패페편평포표푸품프피필하학한할함합항해행향허헌혁현형혜호홍화환활황회효후"
)

QUERIES: dict[str, list[str]] = {
    "ko_common": ["삼성전자", "주가", "전망", "카카오", "실적 발표"],
    "ko_particle": ["네이버는", "삼성전자의", "카카오가"],
    "ko_compound_part": ["웹툰", "뱅크", "하이닉스", "에너지", "바이오"],
    "ko_rare": [],  # filled from the corpus's long tail
    "ko_single_char": ["삼", "뉴", "왜"],
    "en": ["nvidia", "apple stock", "TESLA earnings", "dividend"],
    "mixed": ["nvidia 실적", "tesla 주가", "AI 반도체", "NVIDIA의"],
    "multi_rare_conjunction": ["테슬라 배당금", "삼성전자 넷플릭스", "dividend 에코프로"],
    "no_match": ["블록체인펀드", "zzqqxx", "삼성전자 zzqqxx"],
}


def _final_consonant(word: str) -> bool:
    last = word[-1]
    if "가" <= last <= "힣":
        return (ord(last) - 0xAC00) % 28 != 0
    return last.lower() in "lmnr"  # how Korean reads the English names: 애플(l) -> 애플은? close enough


def _particle(word: str, kind: int) -> str:
    """The particle of `kind` (0-8) that fits the word's last syllable."""
    batchim = _final_consonant(word)
    pairs = (("은", "는"), ("이", "가"), ("을", "를"), ("과", "와"), ("으로", "로"), ("이랑", "랑"))
    if kind >= len(pairs):
        return ("의", "도", "만")[kind - len(pairs)]
    return pairs[kind][0 if batchim else 1]


def _zipf_choice(rng: np.random.Generator, items: list[str], size: int, s: float = 1.1) -> list[str]:
    weights = 1.0 / np.arange(1, len(items) + 1) ** s
    idx = rng.choice(len(items), size=size, p=weights / weights.sum())
    return [items[i] for i in idx]


def _tail_companies(rng: np.random.Generator) -> list[str]:
    """Made-up company names: the long tail that makes some queries rare."""
    names = {
        "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))) + str(rng.choice(SUFFIXES)) for _ in range(6000)
    }
    return sorted(names)


def generate(n: int, seed: int = 7) -> pa.Table:
    """A synthetic query log of n rows: query_id, ts, intent, query_text (ts ascending over 90 days)."""
    rng = np.random.default_rng(seed)
    tail = _tail_companies(rng)
    companies = KO_HEAD + tail
    rare_words = ["".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))) for _ in range(30000)]
    ent = _zipf_choice(rng, companies, n)
    ent2 = _zipf_choice(rng, companies, n)
    en = _zipf_choice(rng, EN_HEAD, n, 0.9)
    en2 = _zipf_choice(rng, EN_HEAD, n, 0.9)
    topic = _zipf_choice(rng, TOPICS, n, 0.8)
    en_topic = _zipf_choice(rng, EN_TOPICS, n, 0.8)
    # Plain lists: indexing numpy arrays element by element is what made this loop slow.
    tails = [TAILS[j] for j in rng.integers(0, len(TAILS), size=n).tolist()]
    kind = rng.random(n).tolist()
    template = rng.integers(0, 6, size=n).tolist()
    extra = rng.random(n).tolist()
    particle = rng.integers(0, 9, size=n).tolist()
    texts: list[str] = []
    for i in range(n):
        e, t, k = ent[i], topic[i], kind[i]
        tpl = template[i]
        if k < 0.70:  # Korean
            if tpl == 0:
                s = f"{e}{_particle(e, particle[i])} {t} {tails[i]}"
            elif tpl == 1:
                s = f"{e} {t} {tails[i]}"
            elif tpl == 2:
                s = f"오늘 {e} {t} 뉴스"
            elif tpl == 3:
                s = f"{e}{'랑' if not _final_consonant(e) else '이랑'} {ent2[i]} 비교해줘"
            elif tpl == 4:
                s = f"{e}{t} {tails[i]}"  # no space: a compound the FTS extension cannot split
            else:
                s = f"{t} 관련주 {e}{_particle(e, particle[i])} {tails[i]}"
        elif k < 0.85:  # English
            a = en[i]
            a = a.lower() if tpl % 3 == 0 else (a.upper() if tpl % 3 == 1 else a)
            s = (
                f"{a} {en_topic[i]} today",
                f"why is {a} down",
                f"{a} {en_topic[i]}",
                f"compare {a} and {en2[i]}",
                f"what is the {en_topic[i]} for {a} in 2025",
                f"news about {a} {en_topic[i]}",
            )[tpl]
        else:  # mixed
            a = en[i]
            s = (
                f"{a} {t} {tails[i]}",
                f"{a}의 {t}",
                f"{a}{t} 언제야",
                f"{e} {en_topic[i]}",
                f"{a} vs {e} {t}",
                f"{a} {en_topic[i]} {tails[i]}",
            )[tpl]
        x = extra[i]
        if x < 0.08:
            s = f"{s} {rare_words[i % len(rare_words)]}"
        elif x < 0.09:
            s = unicodedata.normalize("NFD", s)
        elif x < 0.095:
            s = s.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})  # full-width ASCII
        texts.append(s)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    ts_us = np.sort(rng.integers(0, 90 * 86_400_000_000, size=n)) + int(start.timestamp() * 1_000_000)
    ids = [
        f"{t // 1000:012x}-{r:016x}"
        for t, r in zip(ts_us.tolist(), rng.integers(0, 2**63, size=n).tolist(), strict=True)
    ]
    intent = rng.choice(len(INTENTS) + 1, size=n, p=[*(p * 0.98 for p in INTENT_P), 0.02])
    intents = pa.array([INTENTS[j] if j < len(INTENTS) else None for j in intent.tolist()], pa.string())
    return pa.table(
        {
            "query_id": pa.array(ids, pa.string()),
            "ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            "intent": intents,
            "query_text": pa.array(texts, pa.string()),
        }
    )


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> dict[str, float]:
    """Resident memory now: anonymous (heap) and file-backed (the memory-mapped index pages touched so far)."""
    out: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024)
    return out


def _du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def phase_generate(n: int, root: Path) -> dict[str, Any]:
    corpus = root / f"corpus-{n}.parquet"
    if corpus.exists():
        return {"corpus": str(corpus), "cached": True}
    t = time.perf_counter()
    table = generate(n)
    pq.write_table(table, corpus, compression="zstd")
    return {"corpus": str(corpus), "generate_s": round(time.perf_counter() - t, 1)}


def phase_build(n: int, root: Path) -> dict[str, Any]:
    from querylog.analytics.search import SearchIndex

    index_dir = root / f"index-{n}"
    shutil.rmtree(index_dir, ignore_errors=True)
    table = pq.read_table(root / f"corpus-{n}.parquet")
    t0 = time.perf_counter()
    index = SearchIndex(index_dir)
    added = index.add_arrow(table)
    t1 = time.perf_counter()
    index.commit()
    t2 = time.perf_counter()
    return {
        "rows": added,
        "add_arrow_s": round(t1 - t0, 1),
        "commit_s": round(t2 - t1, 1),
        "build_total_s": round(t2 - t0, 1),
        "index_mb": round(_du_mb(index_dir), 1),
        "corpus_parquet_mb": round((root / f"corpus-{n}.parquet").stat().st_size / 2**20, 1),
        "build_peak_rss_mb": round(_rss_mb()),
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def _evict(directory: Path) -> None:
    """Drop the index's files (only these) from the page cache, so the next search reads them from disk."""
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def phase_search(n: int, root: Path, repeats: int) -> dict[str, Any]:
    """Top-50 latency per query: one cold run each, then `repeats` warm runs each."""
    import gc

    from querylog.analytics.search import SearchIndex

    index_dir = root / f"index-{n}"
    t = time.perf_counter()
    index = SearchIndex(index_dir)
    open_ms = (time.perf_counter() - t) * 1000
    queries = {k: list(v) for k, v in QUERIES.items()}
    # Rare words: long-tail company names, looked up as the user would type them.
    tail = _tail_companies(np.random.default_rng(7))  # the same draws as generate(seed=7) makes first
    queries["ko_rare"] = [tail[-1], tail[len(tail) // 2], tail[0][:3]]
    cases: list[tuple[str, str, dict[str, Any]]] = [(c, q, {}) for c, qs in queries.items() for q in qs]
    newest = index.search("주가", limit=1)[0].ts
    cases += [
        ("filtered", "삼성전자", {"intent": "recommendation"}),
        ("filtered", "nvidia", {"since": newest - timedelta(days=7)}),
        ("filtered", "웹툰", {"intent": "comparison", "since": newest - timedelta(days=30)}),
    ]
    # Cold pass: each query on a freshly opened index whose files were just evicted from the page cache (what
    # the first searches after a reboot see). Warm pass: every query once untimed, then `repeats` times.
    cold: list[float] = []
    details = []
    for cls, query, kwargs in cases:
        del index
        gc.collect()  # unmaps the previous index, else its pages stay resident
        _evict(index_dir)
        index = SearchIndex(index_dir)
        t = time.perf_counter()
        hits = index.search(query, limit=50, **kwargs)
        cold.append((time.perf_counter() - t) * 1000)
        details.append({"class": cls, "query": query, **kwargs, "hits": len(hits), "cold_ms": round(cold[-1], 2)})
    per_class: dict[str, list[float]] = {}
    for detail, (cls, query, kwargs) in zip(details, cases, strict=True):
        index.search(query, limit=50, **kwargs)  # the cold pass evicted this query's pages again: reload them
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            index.search(query, limit=50, **kwargs)
            times.append((time.perf_counter() - t) * 1000)
        per_class.setdefault(cls, []).extend(times)
        detail["warm_median_ms"] = round(statistics.median(times), 2)
    all_times = [x for v in per_class.values() for x in v]
    return {
        "open_ms": round(open_ms, 1),
        "warm": _percentiles(all_times),
        "cold": _percentiles(cold),
        "warm_by_class": {c: _percentiles(v) for c, v in per_class.items()},
        "queries": [{k: (str(v) if isinstance(v, datetime) else v) for k, v in d.items()} for d in details],
        "search_rss_mb": _current_rss_mb(),
    }


def phase_incremental(n: int, root: Path, batch: int) -> dict[str, Any]:
    """Add a batch of new rows to the built index and commit: the steady-state update path."""
    from querylog.analytics.search import SearchIndex

    index_dir = root / f"index-{n}"
    work = root / f"index-{n}-incremental"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(index_dir, work)
    os.sync()  # else the commit's fsyncs would pay for flushing the copy
    table = generate(batch, seed=11)
    index = SearchIndex(work)
    t = time.perf_counter()
    added = index.add_arrow(table)
    t1 = time.perf_counter()
    index.commit()
    t2 = time.perf_counter()
    again = index.add_arrow(table)
    t3 = time.perf_counter()
    lat = []
    for q in ["삼성전자", "웹툰", "nvidia 실적", "테슬라 배당금"]:
        for _ in range(5):
            s = time.perf_counter()
            index.search(q, limit=50)
            lat.append((time.perf_counter() - s) * 1000)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "batch": batch,
        "added": added,
        "add_ms": round((t1 - t) * 1000, 1),
        "commit_ms": round((t2 - t1) * 1000, 1),
        "re_add_same_batch_ms": round((t3 - t2) * 1000, 1),
        "re_added": again,
        "search_after_p50_ms": round(statistics.median(lat), 2),
        "search_after_max_ms": round(max(lat), 2),
    }


def phase_baseline(n: int, root: Path) -> dict[str, Any]:
    """DuckDB ILIKE over the same rows (the scan this index replaces), and how many rows common words match."""
    import duckdb

    corpus = root / f"corpus-{n}.parquet"
    con = duckdb.connect()
    sql = "SELECT query_id FROM {} WHERE query_text ILIKE ? ORDER BY ts DESC LIMIT 50"
    out: dict[str, Any] = {}
    for source in ("parquet", "table"):
        if source == "table":
            con.execute(f"CREATE TABLE q AS SELECT * FROM read_parquet('{corpus}')")
        relation = f"read_parquet('{corpus}')" if source == "parquet" else "q"
        for pattern in ["%네이버%", "%nvidia%"]:
            t = time.perf_counter()
            con.execute(sql.format(relation), [pattern]).fetchall()
            out[f"duckdb_ilike_{source}_ms {pattern}"] = round((time.perf_counter() - t) * 1000, 1)
    for word in ["삼성전자", "주가", "nvidia", "웹툰", "삼"]:
        row = con.execute("SELECT count(*) FROM q WHERE lower(query_text) LIKE ?", [f"%{word}%"]).fetchone()
        out[f"share_matching {word}"] = round((row[0] if row else 0) / n, 4)
    return out


def _child(phase: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", phase, "--n", str(args.n), "--dir", str(args.dir)]
    cmd += ["--repeats", str(args.repeats), "--batch", str(args.batch)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000_000, help="queries in the corpus")
    parser.add_argument("--dir", type=Path, default=Path(".querylog/bench/search"), help="cache directory")
    parser.add_argument("--repeats", type=int, default=10, help="warm runs per query (after its cold run)")
    parser.add_argument("--batch", type=int, default=10_000, help="rows in the incremental-update phase")
    parser.add_argument("--rebuild", action="store_true", help="build the index even if it is cached")
    parser.add_argument("--baseline", action="store_true", help="also time DuckDB ILIKE over the same corpus")
    parser.add_argument("--phase", choices=["generate", "build", "search", "incremental", "baseline"])
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.phase:
        phases: dict[str, Callable[[], dict[str, Any]]] = {
            "generate": lambda: phase_generate(args.n, args.dir),
            "build": lambda: phase_build(args.n, args.dir),
            "search": lambda: phase_search(args.n, args.dir, args.repeats),
            "incremental": lambda: phase_incremental(args.n, args.dir, args.batch),
            "baseline": lambda: phase_baseline(args.n, args.dir),
        }
        print(json.dumps(phases[args.phase](), ensure_ascii=False))
        return
    report: dict[str, Any] = {"n": args.n, "cpus": os.cpu_count()}
    report["generate"] = _child("generate", args)
    if args.rebuild or not (args.dir / f"index-{args.n}" / "manifest.json").exists():
        report["build"] = _child("build", args)
    report["search"] = _child("search", args)
    report["incremental"] = _child("incremental", args)
    if args.baseline:
        report["baseline"] = _child("baseline", args)
    print(json.dumps(report, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
