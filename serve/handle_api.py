"""The handle API every HTTP-serving deployment offers: `serve.get_app_handle(app).<method>.remote(...)`.

A mixin over a `ScoringService` (`self.service`), shared by the separate ingress and the colocated
server, so both answer trainers' handle calls the same way.
"""

from __future__ import annotations

from .serving import ScoringService


class HandleApi:
    service: ScoringService

    async def score(self, conversations: list[list[dict]]) -> list[float]:
        """One score per conversation (a list of {"role", "content"} messages)."""
        return await self.service.score_conversations(conversations)

    async def score_pairs(self, pairs: list[dict]) -> list[list[float]]:
        """[chosen, rejected] scores per {"prompt", "chosen", "rejected"}."""
        return await self.service.score_pairs(pairs)

    async def score_responses(self, groups: list[dict]) -> list[list[float]]:
        """Scores per {"prompt", "responses": [...]} group, in response order."""
        return await self.service.score_responses(groups)

    async def score_token_ids(self, token_ids: list[list[int]]) -> list[float]:
        """One score per token-id list, already templated with the model's chat template."""
        return await self.service.score_token_ids(token_ids)

    async def score_texts(self, texts: list[str]) -> list[float]:
        """One score per already-templated text (chat template and BOS included, as /get_reward takes)."""
        return await self.service.score_texts(texts)

    async def score_records(self, records: list[dict]) -> list[dict]:
        """Result rows as `rmcluster.pipeline.score_records` makes them (id, index, label, score, ..., model)."""
        return await self.service.score_records(records)
