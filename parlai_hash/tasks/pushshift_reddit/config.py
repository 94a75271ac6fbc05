"""The build options, shared by ``-t pushshift_reddit`` and ``parlai build_reddit``.

Kept free of heavy imports: ``parlai`` imports every script module (and so
this one) whenever it starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from parlai_hash.errors import OptionError
from parlai_hash.tasks.pushshift_reddit.dumps import (
    DUMPS_HELP,
    DumpFile,
    describe_dumps,
    require_dumps,
)
from parlai_hash.tasks.pushshift_reddit.filters import FilterConfig, parse_subreddit_list
from parlai_hash.tasks.pushshift_reddit.rules import (
    DEFAULT_RULES,
    MAX_CHARS_RULES,
    RULE_SETS,
    rule_set,
)
from parlai_hash.tasks.pushshift_reddit.splits import check_fractions
from parlai_hash.tasks.pushshift_reddit.tokens import check_bpe_files

_DEFAULT = RULE_SETS[DEFAULT_RULES]


@dataclass(frozen=True)
class BuildConfig:
    """Every build option; the defaults are the ``recipes`` rule set."""

    dump_dir: Optional[Path] = None
    #: None only until ``config_from_opt`` derives the default place.
    build_dir: Optional[Path] = None
    filters: FilterConfig = field(default_factory=FilterConfig)
    #: Deepest comment kept as a response (a reply to the post is depth 1); 0: no limit.
    max_depth: int = _DEFAULT.max_depth
    #: Context turns before a response; 0: the whole thread.
    max_context_turns: int = _DEFAULT.max_context_turns
    #: Read RS_ dumps and give the post title as the first context turn.
    post_titles: bool = True
    valid_fraction: float = _DEFAULT.valid_fraction
    test_fraction: float = _DEFAULT.test_fraction
    shard_size: int = 50000
    max_corrupt_fraction: float = 0.5
    keep_index: bool = False
    #: Lines between commits while ingesting a dump (how much an interruption loses).
    commit_every_lines: int = 100_000

    def shape(self) -> Dict[str, object]:
        """Every option that changes the built examples (for the key and the manifest)."""
        return {
            'filters': self.filters.describe(),
            'max_depth': self.max_depth,
            'max_context_turns': self.max_context_turns,
            'post_titles': self.post_titles,
            'valid_fraction': self.valid_fraction,
            'test_fraction': self.test_fraction,
            'shard_size': self.shard_size,
        }


FILTER_DEFAULTS = FilterConfig()
DEFAULTS = BuildConfig()


def _by_rules(describe: Callable[[Any], str]) -> str:
    """'(recipes: X; ours: Y)', for the help of an option whose default is its rule set's."""
    values = '; '.join(f'{name}: {describe(rules)}' for name, rules in RULE_SETS.items())
    # '%(default).0s' prints nothing, and keeps ParlAI from adding "(default: None)".
    return f'Default: from --reddit-rules ({values}).%(default).0s'


def add_build_args(parser: Any, script: bool = False) -> None:
    """Add the build options to a ParlAI parser (``script``: also ``--dump-dir``/``--out``)."""
    group = parser.add_argument_group('pushshift.io Reddit (-t pushshift_reddit)')
    dump_names = ['--reddit-dump-dir'] + (['--dump-dir'] if script else [])
    out_names = ['--reddit-build-dir'] + (['--out'] if script else [])
    group.add_argument(
        *dump_names,
        dest='reddit_dump_dir',
        type=str,
        default=None,
        help=f'Folder of {DUMPS_HELP}. Read only when the build is missing.',
    )
    group.add_argument(
        *out_names,
        dest='reddit_build_dir',
        type=str,
        default=None,
        help='Where the built shards go. Default: <datapath>/pushshift_reddit/<dump folder name>-<key '
        'of the dump files and the options below>.',
    )
    group.add_argument(
        '--reddit-rules',
        type=str,
        default=DEFAULT_RULES,
        choices=sorted(RULE_SETS),
        help='Which rules give the defaults of the options marked "from --reddit-rules": '
        'recipes (Roller et al. 2020, "Recipes for building an open-domain chatbot", section 6.1) '
        'or ours (this task\'s earlier rules). Options given explicitly override them.',
    )
    group.add_argument(
        '--reddit-max-depth',
        type=int,
        default=None,
        help='Drop comments deeper than this in their thread, with their replies (a reply to the '
        'post is depth 1; 0: no limit). '
        + _by_rules(lambda r: r.max_depth),
    )
    group.add_argument(
        '--reddit-max-context-turns',
        type=int,
        default=None,
        help='Previous turns of the thread given as context (0: all). '
        + _by_rules(lambda r: r.max_context_turns),
    )
    group.add_argument(
        '--reddit-post-titles',
        type='bool',
        default=DEFAULTS.post_titles,
        help='Read the RS_YYYY-MM submission dumps of the dump folder, if any, and give a post\'s '
        'title as the first turn of its thread (replies to the post become responses).',
    )
    group.add_argument(
        '--reddit-min-chars',
        type=int,
        default=FILTER_DEFAULTS.min_chars,
        help='Drop comments shorter than this (characters, after cleaning).',
    )
    group.add_argument(
        '--reddit-max-chars',
        type=int,
        default=FILTER_DEFAULTS.max_chars,
        help='Drop comments longer than this (characters, after cleaning), as '
        '--reddit-max-chars-rule says.',
    )
    group.add_argument(
        '--reddit-max-chars-rule',
        type=str,
        default=None,
        choices=MAX_CHARS_RULES,
        help='without-spaces: drop a comment over --reddit-max-chars only if it has no space; '
        'any: drop every comment over it. ' + _by_rules(lambda r: r.max_chars_rule),
    )
    group.add_argument(
        '--reddit-max-bpe-tokens',
        type=int,
        default=None,
        help='Drop comments longer than this many byte-level BPE tokens (0: no limit); counted '
        'with --reddit-bpe-vocab/--reddit-bpe-merge, or without them as byte-level pre-tokens, '
        'a lower bound. ' + _by_rules(lambda r: r.max_bpe_tokens),
    )
    group.add_argument(
        '--reddit-bpe-vocab',
        type=str,
        default=None,
        help='vocab.json of the byte-level BPE that counts tokens for --reddit-max-bpe-tokens '
        '(e.g. from parlai build_bpe_dict; with --reddit-bpe-merge).',
    )
    group.add_argument(
        '--reddit-bpe-merge',
        type=str,
        default=None,
        help='merges.txt of that byte-level BPE (with --reddit-bpe-vocab).',
    )
    group.add_argument(
        '--reddit-drop-deleted',
        type='bool',
        default=FILTER_DEFAULTS.drop_deleted,
        help='Drop [deleted]/[removed] bodies (and so their replies).',
    )
    group.add_argument(
        '--reddit-drop-urls',
        type='bool',
        default=FILTER_DEFAULTS.drop_urls,
        help='Drop comments containing a URL (http://, https://, ftp://, www.).',
    )
    group.add_argument(
        '--reddit-bot-author-regex',
        type=str,
        default=FILTER_DEFAULTS.bot_author_regex,
        help="Drop comments whose author matches this regex ('' keeps all authors).",
    )
    group.add_argument(
        '--reddit-subreddit-blocklist',
        type=str,
        default=None,
        help="Comma-separated subreddits to drop, case-insensitive ('' keeps all). "
        + _by_rules(
            lambda r: 'nsfw and 20 non-English subreddits'
            if 'nsfw' in parse_subreddit_list(r.subreddit_blocklist)
            else '20 non-English subreddits'
        ),
    )
    group.add_argument(
        '--reddit-drop-non-ascii-start',
        type='bool',
        default=None,
        help='Drop comments whose first character is not ASCII. '
        + _by_rules(lambda r: r.drop_non_ascii_start),
    )
    group.add_argument(
        '--reddit-drop-garbled',
        type='bool',
        default=None,
        help='Drop undecodable text, mostly-symbol text and >60-character unbroken runs. '
        + _by_rules(lambda r: r.drop_garbled),
    )
    group.add_argument(
        '--reddit-drop-non-english',
        type='bool',
        default=None,
        help='Drop text that is mostly non-ASCII letters or has more function words of '
        'another language than of English. ' + _by_rules(lambda r: r.drop_non_english),
    )
    group.add_argument(
        '--reddit-fix-mojibake',
        type='bool',
        default=FILTER_DEFAULTS.fix_mojibake,
        help='Repair UTF-8 read as Latin-1 (donâ€™t -> don’t) before filtering.',
    )
    group.add_argument(
        '--reddit-valid-fraction',
        type=float,
        default=None,
        help='Share of threads (link_id) in the valid split. '
        + _by_rules(lambda r: _fraction(r.valid_fraction)),
    )
    group.add_argument(
        '--reddit-test-fraction',
        type=float,
        default=None,
        help='Share of threads (link_id) in the test split. '
        + _by_rules(lambda r: _fraction(r.test_fraction)),
    )
    group.add_argument(
        '--reddit-shard-size',
        type=int,
        default=DEFAULTS.shard_size,
        help='Examples per shard file (what the streaming teacher loads at once).',
    )
    group.add_argument(
        '--reddit-max-corrupt-fraction',
        type=float,
        default=DEFAULTS.max_corrupt_fraction,
        help='Fail when more than this share of a dump\'s lines are not comments '
        '(a wrong file); fewer are skipped and counted.',
    )
    group.add_argument(
        '--reddit-keep-index',
        type='bool',
        default=DEFAULTS.keep_index,
        help='Keep the SQLite comment index after a successful build (as large as the '
        'kept text; deleted by default).',
    )


def _fraction(value: float) -> str:
    return '1/4096' if value == 1 / 4096 else f'{value:g}'


def _positive(option: str, value: int) -> int:
    if value < 1:
        raise OptionError(option, f"got {value}", "use 1 or more")
    return value


def _limit(option: str, value: int) -> int:
    """A limit where 0 means none."""
    if value < 0:
        raise OptionError(option, f"got {value}", "use 0 (no limit) or more")
    return value


def check_dump_dir(dump_dir: Optional[Union[str, Path]]) -> Path:
    """The dump folder as a Path, or an OptionError saying what to pass."""
    if not dump_dir:
        raise OptionError(
            '--reddit-dump-dir',
            'no dump folder given and no finished build to read',
            f'pass --reddit-dump-dir DIR, a folder of {DUMPS_HELP}',
        )
    path = Path(dump_dir).expanduser()
    if not path.is_dir():
        problem = f'{path} is not a folder' if path.exists() else f'{path} does not exist'
        raise OptionError('--reddit-dump-dir', problem, f'pass a folder of {DUMPS_HELP}')
    return path.resolve()


def build_key(dump_dir: Path, dumps: List[DumpFile], shape: Mapping[str, object]) -> str:
    """A short hash of where the dumps are, which dumps, and every shaping option."""
    payload = json.dumps(
        {'dump_dir': str(dump_dir), 'dumps': describe_dumps(dumps), 'shape': dict(shape)},
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode('utf-8')).hexdigest()[:12]


def _option(opt: Mapping[str, Any], name: str, default: Any) -> Any:
    """``opt['reddit_<name>']``, or the default when absent (a bare dict, an old .opt)."""
    value = opt.get(f'reddit_{name}')
    return default if value is None else value


def config_from_opt(opt: Mapping[str, Any]) -> BuildConfig:
    """The BuildConfig of a ParlAI opt (checks every value; finds the build dir)."""
    rules = rule_set(str(_option(opt, 'rules', DEFAULT_RULES)))
    F = FILTER_DEFAULTS
    filters = FilterConfig(
        drop_deleted=bool(_option(opt, 'drop_deleted', F.drop_deleted)),
        subreddit_blocklist=parse_subreddit_list(
            _option(opt, 'subreddit_blocklist', rules.subreddit_blocklist)
        ),
        bot_author_regex=str(_option(opt, 'bot_author_regex', F.bot_author_regex)),
        drop_urls=bool(_option(opt, 'drop_urls', F.drop_urls)),
        min_chars=int(_option(opt, 'min_chars', F.min_chars)),
        max_chars=int(_option(opt, 'max_chars', F.max_chars)),
        max_chars_rule=str(_option(opt, 'max_chars_rule', rules.max_chars_rule)),
        max_bpe_tokens=int(_option(opt, 'max_bpe_tokens', rules.max_bpe_tokens)),
        bpe_files=check_bpe_files(_option(opt, 'bpe_vocab', None), _option(opt, 'bpe_merge', None)),
        drop_non_ascii_start=bool(_option(opt, 'drop_non_ascii_start', rules.drop_non_ascii_start)),
        drop_garbled=bool(_option(opt, 'drop_garbled', rules.drop_garbled)),
        drop_non_english=bool(_option(opt, 'drop_non_english', rules.drop_non_english)),
        fix_mojibake=bool(_option(opt, 'fix_mojibake', F.fix_mojibake)),
    )
    D = DEFAULTS
    valid_fraction = float(_option(opt, 'valid_fraction', rules.valid_fraction))
    test_fraction = float(_option(opt, 'test_fraction', rules.test_fraction))
    check_fractions(valid_fraction, test_fraction)
    max_corrupt = float(_option(opt, 'max_corrupt_fraction', D.max_corrupt_fraction))
    if not 0.0 <= max_corrupt <= 1.0:
        raise OptionError(
            '--reddit-max-corrupt-fraction', f"got {max_corrupt}", "use a fraction in [0, 1]"
        )
    dump_dir = _option(opt, 'dump_dir', None)
    build_dir = _option(opt, 'build_dir', None)
    config = BuildConfig(
        dump_dir=Path(dump_dir).expanduser().resolve() if dump_dir else None,
        build_dir=Path(build_dir).expanduser().resolve() if build_dir else None,
        filters=filters,
        max_depth=_limit('--reddit-max-depth', int(_option(opt, 'max_depth', rules.max_depth))),
        max_context_turns=_limit(
            '--reddit-max-context-turns',
            int(_option(opt, 'max_context_turns', rules.max_context_turns)),
        ),
        post_titles=bool(_option(opt, 'post_titles', D.post_titles)),
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        shard_size=_positive('--reddit-shard-size', int(_option(opt, 'shard_size', D.shard_size))),
        max_corrupt_fraction=max_corrupt,
        keep_index=bool(_option(opt, 'keep_index', D.keep_index)),
    )
    if config.build_dir is not None:
        return config
    # The default place depends on the dumps themselves: a new month is a new build.
    checked_dump_dir = check_dump_dir(dump_dir)
    inputs = require_dumps(checked_dump_dir).inputs(config.post_titles)
    datapath = Path(opt.get('datapath') or 'data').expanduser().resolve()
    key = build_key(checked_dump_dir, inputs, config.shape())
    return replace(
        config, build_dir=datapath / 'pushshift_reddit' / f'{checked_dump_dir.name}-{key}'
    )
