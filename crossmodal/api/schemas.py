"""DocArray v2 document types shared by every executor of the Flow.

One content type travels the whole chain so that every executor can expose every
endpoint without schema conversions (Jina's chain rule); fields unused by an
endpoint stay ``None`` and cost nothing on the wire.
"""

from typing import Optional

from docarray import DocList
from docarray.typing import NdArray

from crossmodal.api.wire import WireDoc
from crossmodal.settings import MODALITIES  # noqa: F401  (re-exported)


def _inline_item_schema(doc_type: type) -> None:
    """Give ``DocList[doc_type]`` fields a JSON schema with their item fields.

    pydantic v1 emits ``items: {}`` for DocList fields, and Jina's HTTP gateway,
    which rebuilds models from the schema, would then drop every field of the
    nested documents (only ``id`` survives).
    """

    def modify(cls, field_schema: dict, field=None) -> None:
        field_schema["items"] = doc_type.schema()

    DocList[doc_type].__modify_schema__ = classmethod(modify)


class MatchDoc(WireDoc):
    """One search or recommendation result."""

    owner: Optional[str] = None
    modality: Optional[str] = None
    score: float = 0.0
    text: Optional[str] = None
    uri: Optional[str] = None
    tags: Optional[dict] = None
    thumbnail: Optional[str] = None  # data:image/jpeg;base64,... when asked for
    seed: Optional[str] = None  # recommend: which seed produced this match
    cluster: Optional[int] = None  # recommend: interest cluster of that seed (-1: not from a cluster)
    # between the indexer shards and their merger only (never in a response): a recommendation
    # candidate's embedding and the position of the seed that found it
    embedding: Optional[NdArray] = None
    seed_index: Optional[int] = None


_inline_item_schema(MatchDoc)


class MatchGroup(WireDoc):
    """Results of one query modality, split by the modality of the results."""

    text_matches: DocList[MatchDoc] = DocList[MatchDoc]()
    image_matches: DocList[MatchDoc] = DocList[MatchDoc]()


class SeedDoc(WireDoc):
    """A recommendation seed planned by the recommender, searched by the indexer."""

    modality: str = "text"  # modality of the history posts it was built from
    kind: str = "medoid"  # medoid | serendipity | history
    cluster: int = -1
    share: int = 0  # how many of k this seed contributes
    embedding: Optional[NdArray] = None  # between executors only
    key: Optional[str] = None  # as results name it (MatchDoc.seed)
    post_id: Optional[str] = None  # the user's most typical post of this interest
    post_text: Optional[str] = None  # ... its text, or for an image its thumbnail (data: URI)
    post_thumbnail: Optional[str] = None
    member_ids: Optional[list[str]] = None  # every post of the user's that forms the interest


_inline_item_schema(SeedDoc)


class Posts(WireDoc):
    """Stored items' embeddings travelling between executors: a user's history for
    /recommend, the marked items and a sample of the collection for /refine. Shards may live
    on other machines, so what one executor needs from another's store travels in the
    request, packed as arrays: one message however many items (documents cost per item)."""

    ids: list[str] = []
    modalities: list[str] = []
    created_at: Optional[NdArray] = None  # [n] seconds since the epoch
    embeddings: Optional[NdArray] = None  # [n, dim]


class ContentDoc(WireDoc):
    """Content to index, a query, or a request for stats/recommendations. A client sets only
    ``CLIENT_FIELDS``; the gateway drops the others from what a client sends."""

    owner: Optional[str] = None
    modality: Optional[str] = None
    text: Optional[str] = None
    uri: Optional[str] = None
    blob: Optional[bytes] = None
    tags: Optional[dict] = None
    embedding: Optional[NdArray] = None
    thumbnail: Optional[str] = None
    status: Optional[str] = None  # indexed | updated | deleted | not_found | ok | error
    error: Optional[str] = None
    reason: Optional[str] = None
    text_matches: Optional[DocList[MatchDoc]] = None
    image_matches: Optional[DocList[MatchDoc]] = None
    from_text: Optional[MatchGroup] = None
    from_image: Optional[MatchGroup] = None
    seeds: Optional[DocList[SeedDoc]] = None
    feedback: Optional[dict] = None  # /refine: the method and how many labels it used
    # gathered from every indexer shard by the gateway before /recommend and /refine
    # (crossmodal/serve/orchestrate.py): history or marked items, and a sample of the collection
    posts: Optional[Posts] = None
    sample: Optional[Posts] = None
    candidates: Optional[DocList[MatchDoc]] = None  # /recommend: a shard's candidates, for the merger
    shard: Optional[int] = None  # which indexer shard answered (several shards only; the merger clears it)


# What a client may send in a ContentDoc; every other field is the service's own (embeddings,
# matches, statuses, the posts the gateway gathers, a shard's stamp), so the gateway drops
# them from client requests (crossmodal/serve/orchestrate.py: both protocols).
CLIENT_FIELDS = frozenset({"id", "owner", "modality", "text", "uri", "blob", "tags"})
