package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func jobDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const goMod = "module example.com/adder // the job\n\ngo 1.19\n"

func TestBothSignaturesAreRecognisedWhateverTheParametersAreCalled(t *testing.T) {
	cases := map[string]string{
		"func Perform(args []interface{}, kwargs map[string]interface{}) (interface{}, error)": SignatureArgsKwargs,
		"func Perform(a []any, kw map[string]any) (result any, err error)":                     SignatureArgsKwargs,
		"func Perform(input map[string]interface{}) (interface{}, error)":                      SignatureInput,
		"func Perform(in map[string]any) (any, error)":                                         SignatureInput,
	}
	for declaration, want := range cases {
		dir := jobDir(t, map[string]string{"go.mod": goMod, "adder.go": "package adder\n\n" + declaration + " { return nil, nil }\n"})
		job, err := Inspect(dir)
		if err != nil || job.Signature != want || job.ModulePath != "example.com/adder" || job.PackageName != "adder" {
			t.Errorf("%s: %+v %v", declaration, job, err)
		}
	}
}

func TestTheAdapterCallsPerformWithItsSignatureAndTheExample(t *testing.T) {
	input := string(Adapter(Job{ModulePath: "example.com/adder", PackageName: "adder", Signature: SignatureInput, HasExample: true}))
	kwargs := string(Adapter(Job{ModulePath: "example.com/adder", PackageName: "adder", Signature: SignatureArgsKwargs}))

	for _, want := range []string{`import job "example.com/adder"`, "return job.Perform(kwargs)", "docsInputExample = job.DocsInputExample"} {
		if !strings.Contains(input, want) {
			t.Errorf("input adapter lacks %q:\n%s", want, input)
		}
	}
	if !strings.Contains(kwargs, "return job.Perform(args, kwargs)") || strings.Contains(kwargs, "DocsInputExample") {
		t.Errorf("args-kwargs adapter:\n%s", kwargs)
	}
}

func TestDocsInputExampleIsFoundOnlyWithItsSignature(t *testing.T) {
	perform := "func Perform(input map[string]interface{}) (interface{}, error) { return nil, nil }\n"
	with := jobDir(t, map[string]string{"go.mod": goMod, "adder.go": "package adder\n" + perform +
		"func DocsInputExample() map[string]interface{} { return nil }\n"})
	wrong := jobDir(t, map[string]string{"go.mod": goMod, "adder.go": "package adder\n" + perform +
		"func DocsInputExample() string { return \"\" }\n"})

	if job, err := Inspect(with); err != nil || !job.HasExample {
		t.Errorf("with: %+v %v", job, err)
	}
	if job, err := Inspect(wrong); err != nil || job.HasExample {
		t.Errorf("wrong: %+v %v", job, err)
	}
}

func TestMistakesEndTheBuildWithAClearMessage(t *testing.T) {
	cases := []struct {
		files map[string]string
		want  string
	}{
		{map[string]string{"go.mod": goMod, "adder.go": "package adder\nfunc perform() {}\n"}, "no func Perform in package adder"},
		{map[string]string{"go.mod": goMod, "adder.go": "package adder\nfunc Perform(x int) (int, error) { return x, nil }\n"},
			"func Perform has an unsupported signature:\n  func Perform(x int) (int, error)\nexpected one of"},
		{map[string]string{"go.mod": goMod, "sub/adder.go": "package adder\n"}, "no .go files in the job's root directory"},
		{map[string]string{"go.mod": goMod, "a.go": "package a\n", "b.go": "package b\n"}, "mixes packages a, b"},
		{map[string]string{"go.mod": goMod, "adder.go": "package adder\nfunc Perform( {\n"}, "cannot parse"},
		{map[string]string{"adder.go": "package adder\n"}, "cannot read the job's go.mod"},
		{map[string]string{"go.mod": "go 1.19\n", "adder.go": "package adder\n"}, "no module directive"},
	}
	for _, c := range cases {
		_, err := Inspect(jobDir(t, c.files))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.files, err, c.want)
		}
	}
}

func TestTestFilesAndMethodsAreNotPerform(t *testing.T) {
	dir := jobDir(t, map[string]string{
		"go.mod":        goMod,
		"adder.go":      "package adder\ntype T struct{}\nfunc (T) Perform(input map[string]interface{}) (interface{}, error) { return nil, nil }\n",
		"adder_test.go": "package adder\nfunc Perform(input map[string]interface{}) (interface{}, error) { return nil, nil }\n",
	})
	if _, err := Inspect(dir); err == nil || !strings.Contains(err.Error(), "no func Perform") {
		t.Errorf("got %v", err)
	}
}

func TestAPackageMainJobIsMadeImportableKeepingItsLines(t *testing.T) {
	job := "// Package main adds.\npackage main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(Perform(nil, nil)) }\n\n" +
		"func Perform(args []interface{}, kwargs map[string]interface{}) (interface{}, error) { return 42, nil }\n"
	test := "package main\nimport \"testing\"\nfunc TestX(t *testing.T) { main() }\n"
	dir := jobDir(t, map[string]string{"go.mod": goMod, "adder.go": job, "adder_test.go": test, "sub/tool.go": "package main\nfunc main() {}\n"})

	found, err := Inspect(dir)
	if err != nil || found.PackageName != "main" || found.Signature != SignatureArgsKwargs {
		t.Fatalf("%+v %v", found, err)
	}
	if err := MakeImportable(dir); err != nil {
		t.Fatal(err)
	}
	want := "// Package main adds.\npackage racetrackjob\n\nimport \"fmt\"\n\nfunc racetrackJobMain() { fmt.Println(Perform(nil, nil)) }\n\n" +
		"func Perform(args []interface{}, kwargs map[string]interface{}) (interface{}, error) { return 42, nil }\n"
	for name, content := range map[string]string{"adder.go": want, "adder_test.go": test, "sub/tool.go": "package main\nfunc main() {}\n"} {
		got, _ := os.ReadFile(filepath.Join(dir, name))
		if string(got) != content {
			t.Errorf("%s:\n%s\nwant:\n%s", name, got, content)
		}
	}
	if again, err := Inspect(dir); err != nil || again.PackageName != ImportablePackageName {
		t.Errorf("after: %+v %v", again, err)
	}
}

func TestCallsOfTheJobsMainFollowItsNewName(t *testing.T) {
	job := "package main\n\nfunc Perform(input map[string]interface{}) (interface{}, error) {\n" +
		"\tif input == nil {\n\t\tmain()\n\t}\n\tmain := func() {}\n\tmain()\n\treturn nil, nil\n}\n"
	other := "package main\n\nfunc main() {}\n"
	dir := jobDir(t, map[string]string{"go.mod": goMod, "a.go": job, "b.go": other})

	if err := MakeImportable(dir); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "a.go"))
	want := "package racetrackjob\n\nfunc Perform(input map[string]interface{}) (interface{}, error) {\n" +
		"\tif input == nil {\n\t\tracetrackJobMain()\n\t}\n\tmain := func() {}\n\tmain()\n\treturn nil, nil\n}\n"
	if string(got) != want {
		t.Errorf("a.go:\n%s\nwant:\n%s", got, want)
	}
}
