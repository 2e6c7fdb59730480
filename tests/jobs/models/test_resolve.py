"""Which local base folders a person may train or chat on: with accounts, a person who is not an admin only those
the operator lists in STUDIO_MODEL_DIRS (not the models folder's other subfolders, not the Hugging Face cache);
admins and the single local person keep the models folder and the cache when nothing is listed."""

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from huggingface_hub.constants import HF_HUB_CACHE

from jobs.chat.request import base_problem
from jobs.models.resolve import allowed_model_roots
from jobs.spec import SpecError
from jobs.submit import submit_job
from storage import users_repo
from storage.access import LOCAL_OWNER, Person, acting_as

MODELS = Path("/srv/studio/models")
CACHE = Path(HF_HUB_CACHE).expanduser().resolve()


@pytest.mark.parametrize(("person", "configured", "roots"), [
    (None, [], [MODELS, CACHE]),  # the CLI, a worker
    (Person(LOCAL_OWNER, admin=True), [], [MODELS, CACHE]),  # no accounts: the one local person
    (Person("root", admin=True), [], [MODELS, CACHE]),
    (Person("carol"), [], []),  # offered nothing until the operator lists folders
    (Person("carol"), [Path("/srv/bases")], [Path("/srv/bases")]),
    (Person("root", admin=True), [Path("/srv/bases")], [Path("/srv/bases")]),
])
def test_allowed_roots_depend_on_who_asks(person, configured, roots):
    with acting_as(person):
        assert allowed_model_roots(configured, MODELS) == roots


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_a_person_without_admin_rights_trains_and_chats_only_on_listed_folders(studio, tmp_path, demo_model_dir):
    listed = tmp_path / "listed"
    offered = _copy(demo_model_dir, listed / "offered")
    in_models = _copy(demo_model_dir, studio.settings.models_dir / "an-admins-base")
    studio.settings = replace(studio.settings, model_dirs=())  # the models folder and the cache by default
    with studio.db.write() as session:
        users_repo.add_user(session, "carol", "not-used")
    with acting_as(Person("carol")):
        with pytest.raises(SpecError, match="among the folders this studio may load from"):
            submit_job(studio, {"base_model": str(in_models), "max_steps": 2})
        assert "among the folders this studio may load from" in base_problem(studio, str(in_models))
    with acting_as(Person(LOCAL_OWNER, admin=True)):  # no accounts: today's rule
        assert base_problem(studio, str(in_models)) is None
    studio.settings = replace(studio.settings, model_dirs=(listed,))
    with acting_as(Person("carol")):
        assert submit_job(studio, {"base_model": str(offered), "max_steps": 2}) > 0
        assert base_problem(studio, str(offered)) is None
        assert base_problem(studio, str(in_models)) is not None


def test_a_folder_a_person_may_not_load_from_is_not_described_either(studio, demo_model_dir):
    """The form's target chips and the memory verdict read a local base's config and headers: for a person without
    the folder among theirs, nothing of it is read (the form once listed any server folder's module names)."""
    from jobs.models.fits import model_shape
    from jobs.models.resolve import base_module_kinds

    models_dir, folder = studio.settings.models_dir, str(demo_model_dir)
    with acting_as(Person("bob", admin=False)):
        assert base_module_kinds(folder, models_dir) is None and model_shape(folder, models_dir) is None
        assert base_module_kinds(folder, models_dir, [demo_model_dir.parent])["q_proj"] == "linear"
        assert model_shape(folder, models_dir, [demo_model_dir.parent]) is not None
