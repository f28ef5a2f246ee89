"""Puts the user's config directories (`$AIVP_CONFIG_DIR`, then `./conf`) just ahead of the packaged
`aivp_batch/conf` in Hydra's search path, so a user file both adds options and overrides packaged
ones (Hydra takes the first match). Hydra loads this for every app in the environment: it only acts
on a search path that holds aivp-batch's packaged configs, and adds nothing for a missing directory.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin


class AivpBatchUserConfSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not any("aivp_batch" in element.path for element in search_path.get_path()):
            return  # another Hydra app: not ours to touch (and no import of aivp_batch)
        from aivp_batch.user_conf import is_packaged_search_path, search_path_entries

        packaged = next((e for e in search_path.get_path() if is_packaged_search_path(e.path)), None)
        if packaged is None:
            return
        anchor = SearchPathQuery(provider=packaged.provider, path=packaged.path)
        for provider, path in search_path_entries():  # highest precedence first: each goes just
            search_path.prepend(provider=provider, path=path, anchor=anchor)  # before the packaged
