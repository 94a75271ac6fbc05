"""pushshift.io Reddit comments as a ParlAI dialogue task (``-t pushshift_reddit``).

The pieces, one job each:

* ``dumps``: find the monthly ``RC_YYYY-MM`` (and ``RS_YYYY-MM``) files and
  stream their lines (zstd with a long window, bz2, xz, plain ndjson),
  noticing truncation;
* ``records``: parse one line into a comment or submission, or say it is corrupt;
* ``rules``: the two rule sets (Recipes, the default, and ours) behind the defaults;
* ``text``, ``language``, ``tokens`` and ``filters``: clean a body and decide
  whether to drop it;
* ``splits``: train/valid/test by a hash of the thread;
* ``index``: the on-disk SQLite index that joins replies to their parents
  across months and remembers how far an interrupted build got;
* ``shards`` and ``stats``: the built files, their manifest and the stats table;
* ``config``: the options (shared by the teacher and ``parlai build_reddit``);
* ``build``: the build itself; ``agents``: the streaming teacher.

The data card is ``tasks/pushshift_reddit.md`` at the top of the repository.
"""
