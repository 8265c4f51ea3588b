"""The corrected text of an /edit gets a column of its own for its formatting.

Under 0002/0003 `push_messages.edited_text` held JSON `{"text": …, "entities": […]}`, because
the schema had no place for the entities. Now `edited_text` is the text alone and
`edited_entities` (JSON, a list of Bot API MessageEntity objects) its formatting. The
upgrade splits what is stored; the downgrade joins it again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:00:00.000000+00:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PUSHES = sa.table(
    "push_messages",
    sa.column("uuid", sa.Uuid()),
    sa.column("edited_text", sa.Text()),
    sa.column("edited_entities", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("push_messages") as batch:
        batch.add_column(sa.Column("edited_entities", sa.JSON(), nullable=True))
    connection = op.get_bind()
    stored = connection.execute(
        sa.select(PUSHES.c.uuid, PUSHES.c.edited_text).where(PUSHES.c.edited_text.is_not(None))
    ).all()
    for push_uuid, edited in stored:
        text, entities = _split(edited)
        connection.execute(
            sa.update(PUSHES)
            .where(PUSHES.c.uuid == push_uuid)
            .values(edited_text=text, edited_entities=entities)
        )


def downgrade() -> None:
    connection = op.get_bind()
    stored = connection.execute(
        sa.select(PUSHES.c.uuid, PUSHES.c.edited_text, PUSHES.c.edited_entities).where(
            PUSHES.c.edited_text.is_not(None)
        )
    ).all()
    for push_uuid, text, entities in stored:
        joined = json.dumps({"text": text, "entities": entities or []}, ensure_ascii=False)
        connection.execute(
            sa.update(PUSHES).where(PUSHES.c.uuid == push_uuid).values(edited_text=joined)
        )
    with op.batch_alter_table("push_messages") as batch:
        batch.drop_column("edited_entities")


def _split(edited: str) -> tuple[str, list[dict[str, Any]] | None]:
    """0002's JSON into (text, entities); anything else was plain text."""
    try:
        decoded = json.loads(edited)
    except ValueError:
        return edited, None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("text"), str):
        return edited, None
    entities = decoded.get("entities")
    kept = [e for e in entities if isinstance(e, dict)] if isinstance(entities, list) else []
    return decoded["text"], kept or None
