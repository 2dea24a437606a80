module example.com/go-adder

go 1.19
