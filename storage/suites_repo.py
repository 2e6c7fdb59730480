"""Prompt suites and their result grids. Session first, never commits."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.access import new_owner, visible
from storage.models import PromptSuite, SuiteResult


def get_suite(session: Session, name: str) -> PromptSuite | None:
    return session.scalars(select(PromptSuite).where(PromptSuite.name == name, visible(PromptSuite.owner))).first()


def add_suite(session: Session, name: str, prompts: list[dict]) -> PromptSuite:
    """A new suite owned by the person acting, with its id."""
    suite = PromptSuite(name=name, prompts=prompts, owner=new_owner())
    session.add(suite)
    session.flush()
    return suite


def replace_prompts(session: Session, suite: PromptSuite, prompts: list[dict]) -> None:
    """New prompts for the suite; its results answered the old ones, so they go."""
    suite.prompts = prompts
    drop_results(session, suite.id)
    session.flush()


def list_suites(session: Session) -> list[PromptSuite]:
    return list(session.scalars(select(PromptSuite).where(visible(PromptSuite.owner)).order_by(PromptSuite.name)))


def put_result(session: Session, suite_id: int, base_model: str, pane: str, prompt_index: int, **fields) -> None:
    """Store one cell, replacing what an earlier run left there."""
    session.execute(delete(SuiteResult).where(
        SuiteResult.suite_id == suite_id, SuiteResult.base_model == base_model, SuiteResult.pane == pane,
        SuiteResult.prompt_index == prompt_index))
    session.add(SuiteResult(suite_id=suite_id, base_model=base_model, pane=pane, prompt_index=prompt_index, **fields))


def results_for(session: Session, suite_id: int, base_model: str) -> list[SuiteResult]:
    return list(session.scalars(select(SuiteResult).where(
        SuiteResult.suite_id == suite_id, SuiteResult.base_model == base_model).order_by(
        SuiteResult.prompt_index, SuiteResult.pane)))


def suites_run_on(session: Session, base_model: str) -> list[int]:
    """Ids of the suites that have results on `base_model` (the ones a new adapter of it is run on)."""
    return list(session.scalars(select(SuiteResult.suite_id).where(SuiteResult.base_model == base_model)
                                .distinct()))


def drop_results(session: Session, suite_id: int) -> None:
    session.execute(delete(SuiteResult).where(SuiteResult.suite_id == suite_id))
