"""One codec per endpoint kind: how a request reads for the policy and the cache, and how its answer replays."""
