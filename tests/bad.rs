//! Every recipe in `tests/bad/` is refused before anything runs, with a
//! diagnostic that names the problem, points at it and says what to do.
//! The rendered text (no colour, 80 columns) is snapshotted per file.

use recipe::Recipe;

#[test]
fn bad_recipes_render_their_diagnostics() {
    // The memory check compares with what is available; a fixed figure keeps the snapshots
    // the same on every machine. This binary's only test sets it, so no other sees it.
    std::env::set_var(recipe::check::memory::LIMIT_VAR, "8GiB");
    insta::glob!("bad/*.opt", |path| {
        let name = path.file_name().expect("a globbed file has a name");
        // Show the path relative to the package so snapshots do not depend
        // on where the checkout lives.
        let shown = std::path::Path::new("tests/bad").join(name);
        let bytes = std::fs::read(path).expect("the fixture is readable");
        let recipe = Recipe::from_bytes(&shown, &bytes);
        let err = recipe.compile(&[]).expect_err("a bad recipe must be refused");
        insta::assert_snapshot!(err.render(80));
    });
}
