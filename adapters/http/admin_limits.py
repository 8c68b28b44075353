"""The body of the admin API's rate-limit routes (``PUT /admin/v1/keys/{key_id}/limits``
in admin_keys.py, ``PUT /admin/v1/accounts/{account}/limits`` in admin.py): each limit
given replaces the current one, ``0`` or ``null`` clears it, one not given is left as it
is. Both routes answer ``{"<key|account>_id": ..., "rpm": N|null, "tpm": N|null,
"max_parallel": N|null}``, as the CLI's ``--json`` does."""

from pydantic import BaseModel, ConfigDict, Field

from domain.rate_limits import MAX_LIMIT


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(default=None, ge=0, le=MAX_LIMIT, description="requests per minute; 0 or null: no limit")
    tpm: int | None = Field(
        default=None, ge=0, le=MAX_LIMIT, description="tokens per minute (input + output); 0 or null: no limit"
    )
    max_parallel: int | None = Field(
        default=None, ge=0, le=MAX_LIMIT, description="requests in flight at once; 0 or null: no limit"
    )

    def changes(self) -> dict[str, int | None]:
        """The limits to set, as the commands take them: given ones (null → 0, which clears),
        the others None (left as they are)."""
        given = self.model_fields_set
        return {name: (getattr(self, name) or 0) if name in given else None for name in ("rpm", "tpm", "max_parallel")}
