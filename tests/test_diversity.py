"""Page diversity: the places given to the model are not all taken by one page."""

from __future__ import annotations

from haystack import Document

from pipeline.diversity import POOL, PageDiversity


def _chunks(*pages: str) -> list[Document]:
    return [Document(content=f"{page} {i}", meta={"source": page}, score=1 - i / 100) for i, page in enumerate(pages)]


def _pages(result: dict) -> list[str]:
    return [d.meta["source"] for d in result["documents"]]


def test_without_a_cap_the_best_chunks_are_kept_whatever_their_page():
    assert _pages(PageDiversity(3).run(documents=_chunks("faq", "faq", "faq", "vpn"))) == ["faq", "faq", "faq"]
    assert PageDiversity(3).candidates() == 3


def test_a_cap_makes_room_for_the_next_pages_in_score_order():
    diversity = PageDiversity(4, per_page=1)
    assert diversity.candidates() == 4 * POOL
    chosen = diversity.run(documents=_chunks("faq", "faq", "faq", "vpn", "faq", "ssh", "wifi", "mail"))
    assert _pages(chosen) == ["faq", "vpn", "ssh", "wifi"]
    assert [d.content for d in chosen["documents"]] == ["faq 0", "vpn 3", "ssh 5", "wifi 6"]


def test_two_per_page_keeps_a_page_second_passage():
    chosen = PageDiversity(4, per_page=2).run(documents=_chunks("faq", "faq", "faq", "vpn", "faq", "ssh"))
    assert [d.content for d in chosen["documents"]] == ["faq 0", "faq 1", "vpn 3", "ssh 5"]


def test_when_too_few_pages_were_found_the_best_left_out_chunks_fill_the_places_in_order():
    chosen = PageDiversity(4, per_page=1).run(documents=_chunks("faq", "faq", "vpn", "faq", "vpn"))
    assert [d.content for d in chosen["documents"]] == ["faq 0", "faq 1", "vpn 2", "faq 3"]
    assert PageDiversity(4, per_page=1).run(documents=[])["documents"] == []
