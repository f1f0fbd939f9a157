// SPDX-License-Identifier: CERN-OHL-P-2.0
//
// LINT FIXTURE - THE FINDINGS IN THIS FILE ARE DELIBERATE. DO NOT FIX THEM.
//
// Plain Verilog-2001 that parses (pyverilog 1.3, Verilator) but contains
// classic RTL coding mistakes, so that a lint report has something to show.
// Every line that carries a finding is tagged "FINDING <id>"; README.md lists
// the expected findings with file:line.
//
//   F1  latch: incomplete assignment (if without else) in always @(*)
//   F2  latch: case without default in always @(*)
//   F3  blocking assignment (=) in a clocked always block
//   F4  one signal driven from two always blocks (posedge and negedge clk)
//   F5  implicit net: undeclared name on the left of a continuous assignment
//   F6  implicit net: undeclared name in a port connection
//   F7  unused input port

module findings (
    input  wire       clk,
    input  wire       rst,
    input  wire       en,
    input  wire [1:0] sel,
    input  wire [7:0] a,
    input  wire [7:0] b,
    input  wire       spare_in,   // FINDING F7: input port that nothing reads
    output reg  [7:0] hold_a,
    output reg  [7:0] mux_out,
    output reg  [7:0] acc,
    output reg        flag,       // FINDING F4: driven from two always blocks (see below)
    output wire       any_set_out,
    output wire       parity_out
);

    // F1: no else branch, so hold_a must keep its value when en == 0.
    always @(*) begin             // FINDING F1: this block infers a latch on hold_a
        if (en)
            hold_a = a;           // FINDING F1: latch on hold_a (no else)
    end

    // F2: sel == 2'b11 is not covered and there is no default.
    always @(*) begin             // FINDING F2: this block infers a latch on mux_out
        case (sel)                // FINDING F2: case without default -> latch on mux_out
            2'b00: mux_out = a;
            2'b01: mux_out = b;
            2'b10: mux_out = a & b;
        endcase
    end

    // F3: should be non-blocking (<=) in a clocked block.
    always @(posedge clk) begin   // FINDING F3: clocked block using blocking assignments
        if (rst)
            acc = 8'd0;           // FINDING F3: blocking assignment in clocked block
        else
            acc = acc + b;        // FINDING F3: blocking assignment in clocked block
    end

    // F4: flag is assigned in two different always blocks (the second one even
    // on the other clock edge, which is what makes Verilator report it).
    always @(posedge clk) begin   // FINDING F4: first always block driving flag
        if (rst)
            flag <= 1'b0;         // FINDING F4: first driver of flag
        else if (en)
            flag <= 1'b1;         // FINDING F4: first driver of flag
    end

    always @(negedge clk) begin   // FINDING F4: second always block driving flag
        if (sel == 2'b11)
            flag <= 1'b0;         // FINDING F4: second driver of flag
    end

    // F5: any_set is never declared; the assignment creates an implicit wire.
    assign any_set = |a;          // FINDING F5: implicit net any_set
    assign any_set_out = any_set;

    // F6: par_bit is never declared; the port connection creates an implicit wire.
    parity_gen u_parity (
        .data   (a),
        .parity (par_bit)         // FINDING F6: implicit net par_bit
    );
    assign parity_out = par_bit;

endmodule
