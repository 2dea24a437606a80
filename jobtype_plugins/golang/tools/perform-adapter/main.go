// Command perform-adapter connects a golang job's code to the wrapper, at image build time.
//
//	perform-adapter JOB_DIR OUTPUT_FILE
//
// It reads the module path from JOB_DIR/go.mod, finds `func Perform` in the package at the
// module root (parsing only: nothing is compiled or run), and writes a Go file for the
// wrapper's package that calls it with the signature it has:
//
//	func Perform(args []interface{}, kwargs map[string]interface{}) (interface{}, error)
//	func Perform(input map[string]interface{}) (interface{}, error)
//
// `func DocsInputExample() map[string]interface{}`, when present, gives the API page its
// example. Anything else ends the build with one message saying what was found and what is
// expected. Standard library only.
//
// A job written as `package main` (as Racetrack's user guide puts it: "your main function")
// cannot be imported, so its root files are made importable in place, in the build stage's copy
// only: the package clause becomes `package racetrackjob` and a `func main()` of the job's own
// is renamed to racetrackJobMain (its calls too), where it is kept but never run (the wrapper is
// the program).
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The two conventions, by the text of their parameter lists (`any` is `interface{}`).
const (
	SignatureArgsKwargs = "args-kwargs"
	SignatureInput      = "input"
)

var expected = "expected one of:\n" +
	"  func Perform(args []interface{}, kwargs map[string]interface{}) (interface{}, error)\n" +
	"  func Perform(input map[string]interface{}) (interface{}, error)"

// Job is what the adapter needs to know about the job's root package.
type Job struct {
	ModulePath  string
	PackageName string
	Signature   string // SignatureArgsKwargs or SignatureInput
	HasExample  bool
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: perform-adapter JOB_DIR OUTPUT_FILE")
		os.Exit(2)
	}
	job, err := Inspect(os.Args[1])
	if err == nil && job.PackageName == "main" {
		err = MakeImportable(os.Args[1])
	}
	if err == nil {
		err = os.WriteFile(os.Args[2], Adapter(job), 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "golang job: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("golang job: package %s (%s) has Perform with the %s signature\n", job.PackageName, job.ModulePath, job.Signature)
}

// Inspect reads the job's go.mod and the Go files of its root package.
func Inspect(dir string) (Job, error) {
	modulePath, err := readModulePath(filepath.Join(dir, "go.mod"))
	if err != nil {
		return Job{}, err
	}
	files, err := parseRootPackage(dir)
	if err != nil {
		return Job{}, err
	}
	job := Job{ModulePath: modulePath}
	var performs []*ast.FuncDecl
	for _, file := range files {
		if job.PackageName == "" {
			job.PackageName = file.Name.Name
		}
		for _, decl := range file.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv != nil {
				continue
			}
			switch fn.Name.Name {
			case "Perform":
				performs = append(performs, fn)
			case "DocsInputExample":
				job.HasExample = signatureOf(fn.Type) == "() (map[string]interface{})"
			}
		}
	}
	if len(performs) == 0 {
		return Job{}, fmt.Errorf("no func Perform in package %s (the .go files in the job's root directory); %s",
			job.PackageName, expected)
	}
	switch signatureOf(performs[0].Type) {
	case "([]interface{}, map[string]interface{}) (interface{}, error)":
		job.Signature = SignatureArgsKwargs
	case "(map[string]interface{}) (interface{}, error)":
		job.Signature = SignatureInput
	default:
		return Job{}, fmt.Errorf("func Perform has an unsupported signature:\n  func Perform%s\n%s",
			strings.TrimPrefix(exprText(performs[0].Type), "func"), expected)
	}
	return job, nil
}

// ImportablePackageName replaces `main` in the package clause of a job's root files.
const ImportablePackageName = "racetrackjob"

// RenamedMain is what the job's own `func main()`, if any, is called once made importable.
const RenamedMain = "racetrackJobMain"

// MakeImportable rewrites the `package main` files of dir (tests aside) into an importable
// package: only the package clause and the name of a top-level `func main()` change, byte for
// byte, so line numbers in compiler messages and panics still match the job's source.
func MakeImportable(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, entry := range entries {
		name := entry.Name()
		if entry.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		path := filepath.Join(dir, name)
		source, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		// With object resolution: a call to a local variable named main is not the job's main.
		file, err := parser.ParseFile(fset, path, source, 0)
		if err != nil {
			return fmt.Errorf("cannot parse %v", err)
		}
		if file.Name.Name != "main" {
			continue
		}
		type edit struct {
			offset int
			old    string
			new    string
		}
		edits := []edit{{fset.Position(file.Name.Pos()).Offset, "main", ImportablePackageName}}
		for _, decl := range file.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok && fn.Recv == nil && fn.Name.Name == "main" {
				edits = append(edits, edit{fset.Position(fn.Name.Pos()).Offset, "main", RenamedMain})
				fmt.Printf("golang job: %s: the job's own func main() is renamed %s and never runs: "+
					"racetrackd's wrapper is the program (put start-up code in func init())\n", name, RenamedMain)
			}
		}
		// Calls of it (main() from a try-out function, say), unresolved ones being the package's.
		ast.Inspect(file, func(node ast.Node) bool {
			if call, ok := node.(*ast.CallExpr); ok {
				if id, ok := call.Fun.(*ast.Ident); ok && id.Name == "main" && (id.Obj == nil || id.Obj.Kind == ast.Fun) {
					edits = append(edits, edit{fset.Position(id.Pos()).Offset, "main", RenamedMain})
				}
			}
			return true
		})
		sort.Slice(edits, func(i, j int) bool { return edits[i].offset < edits[j].offset })
		// From the end backwards, so earlier offsets stay valid.
		for i := len(edits) - 1; i >= 0; i-- {
			e := edits[i]
			source = append(source[:e.offset:e.offset], append([]byte(e.new), source[e.offset+len(e.old):]...)...)
		}
		if err := os.WriteFile(path, source, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// readModulePath is the `module` directive of a go.mod (quoted or not).
func readModulePath(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the job's go.mod: %v", err)
	}
	scanner := bufio.NewScanner(bytes.NewReader(data))
	for scanner.Scan() {
		fields := strings.Fields(strings.SplitN(scanner.Text(), "//", 2)[0])
		if len(fields) == 2 && fields[0] == "module" {
			if unquoted, err := strconv.Unquote(fields[1]); err == nil {
				return unquoted, nil
			}
			return fields[1], nil
		}
	}
	return "", errors.New("the job's go.mod has no module directive")
}

func parseRootPackage(dir string) ([]*ast.File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	var files []*ast.File
	packages := map[string]bool{}
	for _, entry := range entries {
		name := entry.Name()
		if entry.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("cannot parse %v", err)
		}
		files = append(files, file)
		packages[file.Name.Name] = true
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no .go files in the job's root directory; %s", expected)
	}
	if len(packages) > 1 {
		names := make([]string, 0, len(packages))
		for name := range packages {
			names = append(names, name)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("the job's root directory mixes packages %s", strings.Join(names, ", "))
	}
	return files, nil
}

// signatureOf is a function type's parameter and result types, without their names:
// "([]interface{}, map[string]interface{}) (interface{}, error)".
func signatureOf(fn *ast.FuncType) string {
	return "(" + strings.Join(typesOf(fn.Params), ", ") + ") (" + strings.Join(typesOf(fn.Results), ", ") + ")"
}

func typesOf(fields *ast.FieldList) []string {
	var types []string
	if fields == nil {
		return types
	}
	for _, field := range fields.List {
		text := exprText(field.Type)
		for count := max(len(field.Names), 1); count > 0; count-- {
			types = append(types, text)
		}
	}
	return types
}

func max(a, b int) int {
	if a > b {
		return a
	}
	return b
}

var anyWord = regexp.MustCompile(`\bany\b`)

// exprText prints a type the way gofmt would, with `any` spelled `interface{}`.
func exprText(expr ast.Expr) string {
	var buf bytes.Buffer
	if err := format.Node(&buf, token.NewFileSet(), expr); err != nil {
		return ""
	}
	text := strings.ReplaceAll(buf.String(), "interface {\n}", "interface{}")
	text = strings.ReplaceAll(text, "interface {}", "interface{}")
	return anyWord.ReplaceAllString(text, "interface{}")
}

// Adapter is the Go source that plugs the job's Perform into the wrapper's package main.
func Adapter(job Job) []byte {
	call := "job.Perform(args, kwargs)"
	if job.Signature == SignatureInput {
		call = "job.Perform(kwargs)"
	}
	example := ""
	if job.HasExample {
		example = "\n\tdocsInputExample = job.DocsInputExample"
	}
	source := fmt.Sprintf(`// Code generated by racetrackd's perform-adapter at image build time. DO NOT EDIT.

package main

import job %q

func init() {
	performer = Performer{
		Signature: %q,
		Call: func(args []interface{}, kwargs map[string]interface{}) (interface{}, error) {
			return %s
		},
	}%s
}
`, job.ModulePath, job.Signature, call, example)
	formatted, err := format.Source([]byte(source))
	if err != nil {
		return []byte(source)
	}
	return formatted
}
