// The sandbox ("pause") program of the test node: our own few lines instead of an image
// pulled from a registry, which CI cannot reach. No dependencies.
module optiloop.dev/hack/tools/pause

go 1.24.0
