"""``refstore ui`` in a real browser (Debian's Chromium through Selenium), as a person uses it: the artifact
list and its search, a version, a folder, previews of a PNG (and JPEG, GIF, WebP: natural sizes), a CSV and a
Parquet table, a diff of two versions, the lineage graph and a click on one of its nodes, a run and its file
states; against a registry on local disk and one on S3 (moto). A source overwritten in an unversioned bucket
shows the ObjectChangedError text on its preview. A missing browser fails these tests, it never skips them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import s3fs
import ui_support
from conftest import unique_name
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

import refstore


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = ui_support.chrome()
    yield driver
    driver.quit()


@pytest.fixture(scope="module", params=["local", "s3"])
def sample(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The sample registry (tests/surfaces/ui_support.py) on local disk, its sources local files; or in a
    versioned moto bucket, its sources in the same bucket. Yields ``(sample, base URL of a server on it)``."""
    work = tmp_path_factory.mktemp("ui-browser")
    if request.param == "local":

        def put(path: str, data: bytes) -> None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(data)

        root, base = str(work / "registry"), str(work / "data")
    else:
        server = request.getfixturevalue("s3_server")
        fs = s3fs.S3FileSystem(
            key="testing",
            secret="testing",
            client_kwargs={"endpoint_url": server.endpoint_url},
            skip_instance_cache=True,
        )
        bucket = unique_name("s3-ui-")
        fs.mkdir(bucket)
        fs.call_s3("put_bucket_versioning", Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        put, root, base = fs.pipe, f"s3://{bucket}/registry", f"s3://{bucket}/data"
    made = ui_support.build(root, base, put, work / "runs")
    with ui_support.serving(root) as url:
        yield made, url


def _wait(browser: Any, condition: Any, timeout: float = 20) -> Any:
    return WebDriverWait(browser, timeout).until(condition)


def _link(browser: Any, text: str) -> None:
    """Follow the link whose text is exactly ``text`` (as a person clicks a name)."""
    browser.find_element(By.LINK_TEXT, text).click()


def _visible_names(browser: Any, table: str) -> list[str]:
    rows = browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
    return [r.find_element(By.CSS_SELECTOR, "th a").text for r in rows if r.is_displayed()]


def _table_rows(browser: Any, table: str) -> list[list[str]]:
    rows = browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
    return [[c.text for c in r.find_elements(By.CSS_SELECTOR, "td, th")] for r in rows]


def test_artifacts_search_version_folder_and_previews(browser: Any, sample: Any) -> None:
    _, url = sample
    browser.get(f"{url}/artifacts")
    assert _visible_names(browser, "artifacts") == ["digits-model", "mnist", "notes"]
    search = browser.find_element(By.ID, "search")
    search.send_keys("MNI")
    assert _visible_names(browser, "artifacts") == ["mnist"]  # filtered as you type
    search.send_keys(Keys.ENTER)  # and by the server: the query is part of the URL
    _wait(browser, expected_conditions.url_contains("q=MNI"))
    assert _visible_names(browser, "artifacts") == ["mnist"]

    _link(browser, "mnist")
    assert [r[0] for r in _table_rows(browser, "versions")] == ["v1", "v0"]
    _link(browser, "v1")
    assert browser.current_url.endswith("/artifacts/mnist/v1")
    _link(browser, "train")
    assert browser.current_url.endswith("/artifacts/mnist/v1/files/train/")
    _link(browser, "part-0.parquet")
    assert browser.current_url.endswith("/artifacts/mnist/v1/files/train/part-0.parquet")
    header = [
        c.text.split("\n")[0] for c in browser.find_elements(By.CSS_SELECTOR, "#preview-table thead th")
    ]
    assert header == ["id", "label", "weight", "name"]
    assert _table_rows(browser, "preview-table")[0] == ui_support.PARQUET_FIRST_ROW

    browser.back()
    _link(browser, "v1")  # the breadcrumb
    _link(browser, "labels.csv")
    header = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#preview-table thead th")]
    assert header == ["id", "label", "split", "note"]
    assert _table_rows(browser, "preview-table")[0] == ui_support.CSV_FIRST_ROW

    for name, (width, height) in ui_support.IMAGE_SIZES.items():
        browser.get(f"{url}/artifacts/mnist/v1/files/images/{name}")
        image = browser.find_element(By.ID, "preview-image")
        _wait(browser, lambda b, i=image: b.execute_script("return arguments[0].complete", i))
        natural = browser.execute_script(
            "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image
        )
        assert natural == [width, height], name


def test_diff_of_two_versions(browser: Any, sample: Any) -> None:
    _, url = sample
    browser.get(f"{url}/artifacts/mnist")
    Select(browser.find_element(By.ID, "diff-a")).select_by_visible_text("v0")
    Select(browser.find_element(By.ID, "diff-b")).select_by_visible_text("v1")
    browser.find_element(By.CSS_SELECTOR, "form.diff button").click()
    _wait(browser, expected_conditions.url_contains("/artifacts/mnist/diff/v0/v1"))
    assert [r[0] for r in _table_rows(browser, "added")] == ["test/part-0.parquet"]
    assert [r[0] for r in _table_rows(browser, "modified")] == ["labels.csv"]
    assert browser.find_element(By.ID, "diff-removed").find_element(By.XPATH, "..").text.endswith("None.")
    old_size, new_size = _table_rows(browser, "modified")[0][1:]
    assert old_size != new_size


def test_lineage_graph_depth_and_a_node_link(browser: Any, sample: Any) -> None:
    made, url = sample
    browser.get(f"{url}/artifacts/mnist/v1")
    _link(browser, "Lineage graph")
    nodes = _wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#graph svg a.node"))
    labels = {n.text.split("\n")[-1] for n in nodes}
    assert labels == {"mnist:v1", made.train_run, "digits-model:v0"}  # depth 2
    Select(browser.find_element(By.ID, "depth")).select_by_visible_text("3")
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#graph svg a.node")) == 4)
    assert made.eval_run in browser.find_element(By.ID, "graph").text
    Select(browser.find_element(By.ID, "depth")).select_by_visible_text("1")
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#graph svg a.node")) == 2)
    run_node = next(
        n for n in browser.find_elements(By.CSS_SELECTOR, "#graph svg a.node") if made.train_run in n.text
    )
    run_node.click()
    _wait(browser, expected_conditions.url_contains(f"/runs/{made.train_run}"))
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Run {made.train_run}"


def test_run_with_its_file_states_and_artifacts(browser: Any, sample: Any) -> None:
    made, url = sample
    browser.get(f"{url}/runs")
    _link(browser, made.train_run)
    states = [r for r in _table_rows(browser, "run-files")]
    assert states[0][:2] == ["metrics.json", "0"] and states[1][0] == "1"  # state 1 continues the row group
    assert states[0][2] == "12 B" and states[1][1] == "26 B"
    assert ["lr", "0.01"] in _table_rows(browser, "config")
    used = [a.text for a in browser.find_elements(By.XPATH, "//h3[.='Used']/following-sibling::ul[1]//a")]
    logged = [a.text for a in browser.find_elements(By.XPATH, "//h3[.='Logged']/following-sibling::ul[1]//a")]
    assert (used, logged) == (["mnist:v1"], ["digits-model:v0"])
    _link(browser, "digits-model:v0")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("digits-model:v0")


def test_registry_text_is_shown_never_run(browser: Any, sample: Any) -> None:
    _, url = sample
    browser.get(f"{url}/artifacts/notes/v0")
    assert ui_support.HOSTILE in browser.find_element(By.CSS_SELECTOR, "dd.description").text
    browser.get(f"{url}/artifacts/notes")
    assert "owned" not in browser.title


def test_pages_work_with_javascript_off(sample: Any) -> None:
    made, url = sample
    if not made.root.startswith("/"):
        return  # once is enough: the same pages as on local disk
    driver = ui_support.chrome(javascript=False)
    try:
        driver.get(f"{url}/artifacts")
        search = driver.find_element(By.ID, "search")
        search.send_keys("digits")
        search.send_keys(Keys.ENTER)
        _wait(driver, expected_conditions.url_contains("q=digits"))
        assert _visible_names(driver, "artifacts") == ["digits-model"]
        driver.get(f"{url}/artifacts/mnist")
        Select(driver.find_element(By.ID, "diff-a")).select_by_visible_text("v0")
        driver.find_element(By.CSS_SELECTOR, "form.diff button").click()
        _wait(driver, expected_conditions.url_contains("/artifacts/mnist/diff/v0/v1"))
        _link(driver, "labels.csv")
        assert _table_rows(driver, "preview-table")[0] == ui_support.CSV_FIRST_ROW
    finally:
        driver.quit()


def test_an_overwritten_source_in_an_unversioned_bucket_shows_the_changed_object_error(
    browser: Any, s3_fs: Any, s3_unversioned_bucket: str, tmp_path: Path
) -> None:
    s3_fs.pipe(f"{s3_unversioned_bucket}/table.csv", ui_support.csv_bytes())
    artifact = refstore.Artifact("moving")
    artifact.add_reference(f"s3://{s3_unversioned_bucket}/table.csv")
    root = str(tmp_path / "registry")
    version = refstore.Registry(root).log(artifact)
    s3_fs.pipe(f"{s3_unversioned_bucket}/table.csv", ui_support.csv_bytes(extra=1))
    with pytest.raises(refstore.ObjectChangedError) as raised:
        version.open("table.csv").read()
    with ui_support.serving(root) as url:
        browser.get(f"{url}/artifacts/moving/v0/files/table.csv")
        shown = browser.find_element(By.CSS_SELECTOR, ".preview .error").text
    assert shown == str(raised.value)
    assert not browser.find_elements(By.ID, "preview-table")
